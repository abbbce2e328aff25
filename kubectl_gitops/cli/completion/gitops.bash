# bash completion for kubectl-gitops; load it with
#     source <(kubectl gitops completion bash)
# `kubectl gitops <TAB>` needs only kubectl's own completion
# (source <(kubectl completion bash)), which runs kubectl_complete-gitops.
# This script adds `git gitops <TAB>` (git's completion calls _git_gitops)
# and the kubectl-gitops / git-gitops executables run directly.

# __kubectl_gitops_complete EXE SUFFIX WORD... CUR: fill COMPREPLY from
# `EXE __complete WORD... CUR` (cobra's format: candidates, then :directive).
__kubectl_gitops_complete() {
    local exe=$1 suffix=$2 line directive=0 cur=${!#}
    shift 2
    local -a found=()
    local out
    out=$("$exe" __complete "$@" 2>/dev/null) || return 0
    while IFS= read -r line; do
        case $line in
            :[0-9]*) directive=${line#:} ;;
            '') ;;
            *) found+=("${line%%$'\t'*}") ;;
        esac
    done <<<"$out"
    COMPREPLY=()
    if ((${#found[@]})); then
        COMPREPLY=("${found[@]}")
        # bash splits --opt=value at '=': only the part after it is replaced.
        if [[ $cur == *=* && $COMP_WORDBREAKS == *=* ]]; then
            COMPREPLY=("${COMPREPLY[@]#*=}")
        fi
        ((directive & 2)) || COMPREPLY=("${COMPREPLY[@]/%/$suffix}")
    elif ((directive & 16)); then
        mapfile -t COMPREPLY < <(compgen -d -- "$cur")
    elif ((directive & 4)); then
        :
    else
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
}

# git's completion (git-completion.bash) calls _git_<command> for `git <command>`,
# with words, cword and cur set; __git_cmd_idx is where "gitops" stands.
# git registers its completion with -o nospace, so candidates carry their space.
_git_gitops() {
    local i=$((${__git_cmd_idx:-1} + 1))
    __kubectl_gitops_complete git-gitops ' ' "${words[@]:i:cword-i}" "$cur"
}

_kubectl_gitops_direct() {
    __kubectl_gitops_complete "$1" '' "${COMP_WORDS[@]:1:COMP_CWORD-1}" "${COMP_WORDS[COMP_CWORD]}"
}
complete -F _kubectl_gitops_direct kubectl-gitops git-gitops
