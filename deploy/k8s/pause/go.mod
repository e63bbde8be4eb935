// The pod sandbox's pause program (main.go): no dependencies, built by deploy/k8s/install-k8s.sh.
module taskfan.local/pause

go 1.26.4
