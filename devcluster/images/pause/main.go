// pause is the process of a pod sandbox on the dev cluster's real node: it holds the pod's
// namespaces open, reaps orphaned children when it is PID 1 of a shared process namespace, and
// exits 0 on SIGINT/SIGTERM, as Kubernetes' own pause (build/pause/linux/pause.c) does.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if os.Getpid() != 1 {
		os.Stderr.WriteString("pause: warning: not PID 1\n")
	}
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
