"""What the tests and the benchmarks share: a local two-node Ray cluster, distillation inputs with known
bad rows, and the check that every input row came out exactly once. Needs a checkout of the repository
(the cluster is `cluster/local_cluster.sh`); nothing in the library imports it."""
