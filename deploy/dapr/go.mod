// Wrapper module that builds the Dapr runtime (daprd, placement, scheduler) from the Go module proxy.
// `go install github.com/dapr/dapr/cmd/daprd@vX` is refused because dapr's go.mod has replace lines,
// so this module requires dapr and repeats those lines. Keep the version in step with src/taskfan/versions.env.
module taskfan.local/daprbuild

go 1.26.4

require (
	github.com/dapr/dapr v1.18.1
	// v0.12.5, which dapr v1.18.1 asks for, is refused by the module proxy; v0.12.6 is its patch successor.
	github.com/diagridio/go-etcd-cron v0.12.6
)

replace (
	dubbo.apache.org/dubbo-go/v3 => dubbo.apache.org/dubbo-go/v3 v3.0.3-0.20230118042253-4f159a2b38f3
	gopkg.in/couchbaselabs/gocbconnstr.v1 => github.com/couchbaselabs/gocbconnstr v1.0.5
	github.com/chenzhuoyu/iasm => github.com/chenzhuoyu/iasm v0.9.0
	github.com/chzyer/logex => github.com/chzyer/logex v1.2.1
	github.com/gobwas/pool => github.com/gobwas/pool v0.2.1
	github.com/toolkits/concurrent => github.com/niean/gotools v0.0.0-20151221085310-ff3f51fc5c60
)
