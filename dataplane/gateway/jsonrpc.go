package gateway

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/metamcp/metamcp/dataplane/rpc"
)

// JSON-RPC and MCP error codes the gateway produces.
const (
	codeParseError                 = rpc.CodeParseError
	codeInvalidRequest             = rpc.CodeInvalidRequest
	codeMethodNotFound             = rpc.CodeMethodNotFound
	codeInvalidParams              = rpc.CodeInvalidParams
	codeInternalError              = rpc.CodeInternalError
	codeUnsupportedProtocolVersion = -32022
	// codeHeaderMismatch is 2026-07-28's error for Mcp-Method or Mcp-Name
	// headers that contradict the body.
	codeHeaderMismatch = -32020
	// codeMissingClientCapability is 2026-07-28's error for a request that
	// needs a capability the client did not declare.
	codeMissingClientCapability = -32021
	// codeServerError is the implementation-defined code for an upstream that
	// could not be reached or did not answer in time.
	codeServerError = -32000
	// codeResourceNotFound is MCP's code for an unknown resource URI.
	codeResourceNotFound = -32002
)

// parseMessage decodes one JSON-RPC message. The error is ready to send:
// a parse error for malformed JSON, an invalid request otherwise.
func parseMessage(b []byte) (*rpc.Message, *rpc.Error) {
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return nil, &rpc.Error{Code: codeInvalidRequest, Message: "empty request body: send one JSON-RPC 2.0 message"}
	}
	m, err := rpc.Parse(b)
	if err == nil {
		return m, nil
	}
	if !json.Valid(t) {
		return nil, &rpc.Error{Code: codeParseError, Message: "parse error: the body is not valid JSON: send one JSON-RPC 2.0 message"}
	}
	if t[0] == '[' {
		return nil, &rpc.Error{Code: codeInvalidRequest, Message: "JSON-RPC batches are not supported: send one message per request"}
	}
	return nil, &rpc.Error{Code: codeInvalidRequest, Message: "invalid request: " + err.Error()}
}

var nullID = json.RawMessage("null")

// appendResult appends a JSON-RPC success response.
func appendResult(dst []byte, id, result json.RawMessage) []byte {
	dst = appendResultHead(dst, id)
	dst = append(dst, result...)
	return append(dst, '}')
}

// appendResultHead appends a JSON-RPC result response up to its result,
// which the caller appends, followed by '}'.
func appendResultHead(dst []byte, id json.RawMessage) []byte {
	if len(id) == 0 {
		id = nullID
	}
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	dst = append(dst, id...)
	return append(dst, `,"result":`...)
}

// appendError appends a JSON-RPC error response.
func appendError(dst []byte, id json.RawMessage, e *rpc.Error) []byte {
	if len(id) == 0 {
		id = nullID
	}
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	dst = append(dst, id...)
	dst = append(dst, `,"error":{"code":`...)
	dst = strconv.AppendInt(dst, e.Code, 10)
	dst = append(dst, `,"message":`...)
	dst = rpc.AppendString(dst, e.Message)
	if len(e.Data) > 0 {
		dst = append(dst, `,"data":`...)
		dst = append(dst, e.Data...)
	}
	return append(dst, "}}"...)
}
