// Command hello is the program inside the end-to-end tests' image: it says
// hello, then sleeps until SIGTERM or SIGINT and exits 0, so a container of
// it stays up without a shell and stops at once.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	fmt.Println("hello from mirrord's e2e image")

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	s := <-stop

	fmt.Println("hello: stopping on", s)
}
