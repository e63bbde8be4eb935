// Command pause is the pod sandbox's process: it holds the pod's namespaces open and does nothing else.
// Like Kubernetes' own pause, it exits on SIGINT/SIGTERM and, as PID 1 of a pod that shares its process
// namespace, reaps orphaned children so they do not stay zombies.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
