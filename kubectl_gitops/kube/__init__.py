"""The cluster: the API client and its transport, kubeconfig and
credentials, resource types and discovery, schemas, object health and Leases.
Knows nothing of git or of apps."""
