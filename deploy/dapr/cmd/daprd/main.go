// Command daprd is Dapr's own daprd (github.com/dapr/dapr/cmd/daprd) built with Dapr's `stablecomponents` tag,
// plus the one non-stable component Taskfan uses: the SQLite name resolver, with which several replicas of one
// app id on one host (the local stack's scorers) find each other. deploy/install-dapr.sh builds it.
//
// Why not `-tags allcomponents`, which has the resolver: it compiles every component Dapr ships (AWS, Azure,
// GCP, Kafka, ...) that Taskfan never loads. The stable set keeps what Taskfan's components use (pubsub.redis,
// state.redis, secretstores.local.file, secretstores.kubernetes, the mDNS and Kubernetes name resolvers)
// and builds measurably faster on a fresh machine (install-dapr.sh says by how much).
package main

import (
	"github.com/dapr/components-contrib/nameresolution/sqlite"
	"github.com/dapr/dapr/cmd/daprd/app"
	nrLoader "github.com/dapr/dapr/pkg/components/nameresolution"
)

// Registered as Dapr's own cmd/daprd/components/nameresolution_sqlite.go does under allcomponents.
func init() {
	nrLoader.DefaultRegistry.RegisterComponent(sqlite.NewResolver, "sqlite")
}

func main() {
	app.Run()
}
