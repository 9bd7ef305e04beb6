# bash completion of atp-run(1).  build-aux/managen puts above this
# template the subcommands and option sets of cli/commands.def:
#   _atp_run_commands       the subcommands (not the one-shot run)
#   _atp_run_opts_NAME      the options of subcommand NAME (run: the
#                           one-shot run), --help and --version included
#   _atp_run_with_arg       the options that take a value

# The configuration atp-run would read: -c FILE on the line, else the
# search order of atp.ini(5).
_atp_run_config()
{
    local i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
        -c | --config)
            printf '%s\n' "${COMP_WORDS[i + 1]}"
            return
            ;;
        --config=*)
            printf '%s\n' "${COMP_WORDS[i]#--config=}"
            return
            ;;
        --)
            break
            ;;
        esac
    done
    for i in "${ATP_CONFIG-}" ./atp.ini \
        "${XDG_CONFIG_HOME:-$HOME/.config}/atp/atp.ini" /etc/atp/atp.ini; do
        if [[ -n $i && -f $i ]]; then
            printf '%s\n' "$i"
            return
        fi
    done
}

# Backend names: local, and every [backend.NAME] of the configuration.
_atp_run_backends()
{
    local cfg
    cfg=$(_atp_run_config)
    printf '%s\n' local
    [[ -n $cfg && -r $cfg ]] || return 0
    sed -n 's/^[[:space:]]*\[backend\.\([A-Za-z0-9_-]*\)\][[:space:]]*$/\1/p' \
        "$cfg" 2>/dev/null
}

_atp_run()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev= sub= cmd_at=0 i w opts var
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
    COMPREPLY=()

    # What is on the line before the word: the subcommand, or where the
    # one-shot run's COMMAND starts (the first operand, or after --).
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if [[ $w == -- ]]; then
            cmd_at=$((i + 1))
            break
        fi
        if [[ " $_atp_run_with_arg " == *" $w "* ]]; then
            ((i++))
            continue
        fi
        [[ $w == -* ]] && continue
        if [[ -z $sub && " $_atp_run_commands " == *" $w "* ]]; then
            sub=$w
            continue
        fi
        if [[ -z $sub ]]; then
            cmd_at=$i
            break
        fi
    done

    # Within the one-shot run's COMMAND ARG...: a command, then files.
    if ((cmd_at > 0)); then
        if ((COMP_CWORD == cmd_at)); then
            COMPREPLY=($(compgen -c -- "$cur"))
        else
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return 0
    fi

    case $prev in
    -c | --config)
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$cur"))
        return 0
        ;;
    -w | --workdir | --out)
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -d -- "$cur"))
        return 0
        ;;
    -m | --mount | -o | --output | --resume)
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$cur"))
        return 0
        ;;
    -b | --backend)
        COMPREPLY=($(compgen -W "$(_atp_run_backends)" -- "$cur"))
        return 0
        ;;
    -e | --env)
        compopt -o nospace 2>/dev/null
        COMPREPLY=($(compgen -e -- "$cur"))
        return 0
        ;;
    -t | --timeout | -j | --jobs | --rate | --retries | --inline)
        return 0
        ;;
    esac

    var=_atp_run_opts_${sub:-run}
    opts=${!var}
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif [[ -z $sub ]]; then
        # A subcommand; the COMMAND of a one-shot run goes after --.
        COMPREPLY=($(compgen -W "$_atp_run_commands" -- "$cur"))
    elif [[ $sub == batch ]]; then
        # The attempts file.
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
    return 0
}
complete -F _atp_run atp-run
