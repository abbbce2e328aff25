# fish completion for kubectl-gitops; load it with
#     kubectl gitops completion fish | source
# `kubectl gitops <TAB>` needs only kubectl's own completion
# (kubectl completion fish | source), which runs kubectl_complete-gitops.
# This script adds `git gitops <TAB>` and the kubectl-gitops / git-gitops executables.

# __kubectl_gitops_complete EXE: the words after EXE (or after `git gitops`),
# completed by `EXE __complete`; fish reads value<TAB>description natively.
function __kubectl_gitops_complete --argument-names exe
    set -l words (commandline -opc)
    if test "$exe" = git-gitops; and contains -- gitops $words
        while test "$words[1]" != gitops
            set -e words[1]
        end
    end
    set -e words[1]
    set -l cur (commandline -ct)
    set -l lines ($exe __complete $words $cur 2>/dev/null)
    set -l directive (string replace -r '^:' '' -- $lines[-1])
    set -e lines[-1]
    if set -q lines[1]
        printf '%s\n' $lines
    else if test (math "bitand($directive, 16)") -ne 0
        __fish_complete_directories $cur
    else if test (math "bitand($directive, 4)") -eq 0
        __fish_complete_path $cur
    end
end

# -f: file names only where the directive asks for them (see above).
complete -c kubectl-gitops -f -a '(__kubectl_gitops_complete kubectl-gitops)'
complete -c git-gitops -f -a '(__kubectl_gitops_complete git-gitops)'
complete -c git -n '__fish_seen_subcommand_from gitops' -f -a '(__kubectl_gitops_complete git-gitops)'
