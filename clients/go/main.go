// Command scenecast-go renders a scenecast script through the gateway with code generated from protos/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "scenecast/clients/go/gen/scenecastv1"
)

const usage = `usage: scenecast-go [-gateway host:port] SCRIPT.json OUTPUT.mp4
       scenecast-go [-gateway host:port] -config`

// Same receive limit as the Python and Node clients; MP4 chunks are ~256 KiB, so this is headroom.
const maxMessageBytes = 8 << 20

const configTimeout = 30 * time.Second

// usageError is a bad command line or script: exit code 2, as the Python and Node clients.
type usageError struct{ error }

func main() {
	gateway := flag.String("gateway", envOr("SCENECAST_GATEWAY", "127.0.0.1:50050"), "the gateway's address")
	config := flag.Bool("config", false, "print the gateway's providers and prices as JSON, then exit")
	flag.Usage = func() { fmt.Fprintln(os.Stderr, usage) }
	flag.Parse()
	// Ctrl-C cancels the call, which stops all work for the render on the gateway, then cleans up.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	err := run(ctx, *gateway, *config, flag.Args())
	var bad usageError
	switch {
	case err == nil:
		return
	case errors.As(err, &bad):
		fmt.Fprintln(os.Stderr, bad.Error())
		os.Exit(2)
	default:
		// A gRPC status prints as the other clients print it, e.g. `INVALID_ARGUMENT: output.height must be ...`
		// (codes.Code's own String() spells it InvalidArgument).
		if s, ok := status.FromError(err); ok {
			fmt.Fprintf(os.Stderr, "%s: %s\n", code.Code(s.Code()), s.Message())
		} else {
			fmt.Fprintf(os.Stderr, "error: %v\n", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, gateway string, config bool, args []string) error {
	if (config && len(args) != 0) || (!config && len(args) != 2) {
		return usageError{errors.New(usage)}
	}
	// Plain TCP, as the other clients: the gateway serves loopback or a private network. WithInsecure is deprecated
	// upstream in favour of credentials/insecure, which Debian 12's grpc (1.33) does not have yet.
	conn, err := grpc.Dial(gateway, grpc.WithInsecure(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := pb.NewRenderServiceClient(conn)
	if config {
		return printConfig(ctx, client)
	}
	return render(ctx, client, args[0], args[1])
}

func printConfig(ctx context.Context, client pb.RenderServiceClient) error {
	ctx, cancel := context.WithTimeout(ctx, configTimeout)
	defer cancel()
	config, err := client.GetConfig(ctx, &pb.GetConfigRequest{})
	if err != nil {
		return err
	}
	out, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(config)
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(out))
	return err
}

// render writes the MP4 beside the output and renames it only when complete, so OUTPUT.mp4 is never a partial file.
func render(ctx context.Context, client pb.RenderServiceClient, scriptPath, outputPath string) error {
	request, err := readScript(scriptPath)
	if err != nil {
		return err
	}
	partPath := outputPath + ".part"
	file, err := os.OpenFile(partPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	// Leaving the function cancels the call: a no-op once it ended, otherwise the gateway stops rendering for nobody.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	summary, err := receive(ctx, client, request, file)
	if closeErr := file.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(partPath, outputPath)
	}
	if err != nil {
		os.Remove(partPath)
		return err
	}
	line, err := protojson.Marshal(summary)
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(line))
	return err
}

// readScript reads a RenderRequest in protobuf's JSON form (camelCase or snake_case field names, enums by name);
// a key the contract does not have is an error naming it, never dropped.
func readScript(path string) (*pb.RenderRequest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, usageError{err}
	}
	request := &pb.RenderRequest{}
	if err := protojson.Unmarshal(data, request); err != nil {
		return nil, usageError{fmt.Errorf("%s: %v", path, err)}
	}
	return request, nil
}

// receive reads the whole stream: progress to stderr, chunks into file. Returns the summary once the call ended OK.
func receive(ctx context.Context, client pb.RenderServiceClient, request *pb.RenderRequest, file io.Writer) (*pb.RenderSummary, error) {
	stream, err := client.Render(ctx, request)
	if err != nil {
		return nil, err
	}
	var written uint64
	var summary *pb.RenderSummary
	for {
		response, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch payload := response.Payload.(type) {
		case *pb.RenderResponse_Progress:
			p := payload.Progress
			fmt.Fprintf(os.Stderr, "%s %d/%d %s\n", p.Stage, p.CompletedSteps, p.TotalSteps, p.Message)
		case *pb.RenderResponse_Chunk:
			// A gap or overlap means a lost or reordered message: the file would be corrupt, so stop instead.
			if payload.Chunk.Offset != written {
				return nil, fmt.Errorf("MP4 chunk at offset %d, expected %d", payload.Chunk.Offset, written)
			}
			if _, err := file.Write(payload.Chunk.Data); err != nil {
				return nil, err
			}
			written += uint64(len(payload.Chunk.Data))
		case *pb.RenderResponse_Summary:
			summary = payload.Summary
		}
	}
	if summary == nil {
		return nil, errors.New("the render stream ended without a summary")
	}
	if summary.SizeBytes != written {
		return nil, fmt.Errorf("received %d bytes, the summary says %d", written, summary.SizeBytes)
	}
	return summary, nil
}

func envOr(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}
