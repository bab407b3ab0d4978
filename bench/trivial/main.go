// Command trivial is the baseline of the benchmark in bench/run.sh: a static
// Go program that prints nothing and exits 0, so that the size of its binary
// and the time it takes to run are what any Go binary costs at least.
package main

func main() {}
