module scenecast/clients/go

go 1.19

// The versions of Debian 12's golang-google-grpc-dev and golang-google-protobuf-dev, which the offline build uses
// (see README.md); genproto's is the one grpc 1.33.3 asks for.
require (
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)
