"""What the tests and the benchmarks share: a local two-node Ray cluster, distillation inputs with known
bad rows, the check that every input row came out exactly once, and a loopback port held for a server.
Needs a checkout of the repository (the cluster is `cluster/local_cluster.sh`); nothing in the library
imports it."""
