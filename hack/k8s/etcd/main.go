// Command etcd is the stock etcd server (go.etcd.io/etcd/server/v3/etcdmain),
// built inside the hack/k8s module so it uses the etcd release that the pinned
// Kubernetes release itself depends on. Same as upstream's etcd main.go.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
