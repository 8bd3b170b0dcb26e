package warm
import (
 "testing"
 _ "google.golang.org/grpc"
 _ "google.golang.org/grpc/status"
 _ "google.golang.org/genproto/googleapis/rpc/errdetails"
 _ "google.golang.org/protobuf/encoding/protojson"
 _ "github.com/modelcontextprotocol/go-sdk/mcp"
 _ "github.com/jackc/pgx/v5/pgxpool"
 _ "github.com/redis/go-redis/v9"
 _ "github.com/go-redis/redis_rate/v10"
 _ "github.com/spf13/cobra"
 _ "modernc.org/sqlite"
 _ "sigs.k8s.io/yaml"
 _ "golang.org/x/sync/errgroup"
)
func TestX(t *testing.T){}
