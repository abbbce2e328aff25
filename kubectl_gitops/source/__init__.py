"""Where desired state comes from: git (commits, the index, the working
tree), the `.gitops.yaml` settings, YAML read as kubectl reads it, and
kustomize trees. Knows nothing of the cluster."""
