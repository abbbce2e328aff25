# zsh completion for kubectl-gitops; load it with
#     source <(kubectl gitops completion zsh)        (after compinit)
# `kubectl gitops <TAB>` needs only kubectl's own completion
# (source <(kubectl completion zsh)), which runs kubectl_complete-gitops.
# This script adds `git gitops <TAB>` (zsh's git completion calls _git-gitops
# for a user command) and the kubectl-gitops / git-gitops executables.

# _kubectl_gitops_complete EXE: complete words[2,CURRENT] with `EXE __complete`.
_kubectl_gitops_complete() {
    local exe=$1 line
    local -i directive=0
    local -a found lines
    lines=("${(@f)$($exe __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    for line in "${lines[@]}"; do
        if [[ $line == :<-> ]]; then
            directive=${line#:}
        elif [[ -n $line ]]; then
            # value<TAB>description -> value:description, for _describe
            found+=("${${line%%$'\t'*}//:/\\:}${${(M)line#*$'\t'}:+:${line#*$'\t'}}")
        fi
    done
    if (( ${#found} )); then
        _describe -t values "${exe#*-} arguments" found
    elif (( directive & 16 )); then
        _files -/
    elif (( ! (directive & 4) )); then
        _files
    fi
}

_git-gitops() { _kubectl_gitops_complete git-gitops }
_kubectl_gitops_direct() { _kubectl_gitops_complete $words[1] }
zstyle ':completion:*:*:git:*' user-commands gitops:'GitOps: rollback, validate, install-hooks'
compdef _kubectl_gitops_direct kubectl-gitops git-gitops
