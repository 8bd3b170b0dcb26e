package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// JSON-RPC and MCP error codes the gateway produces.
const (
	codeParseError                 = -32700
	codeInvalidRequest             = -32600
	codeMethodNotFound             = -32601
	codeInvalidParams              = -32602
	codeInternalError              = -32603
	codeUnsupportedProtocolVersion = -32022
	// codeServerError is the implementation-defined code for an upstream that
	// could not be reached or did not answer in time.
	codeServerError = -32000
	// codeResourceNotFound is MCP's code for an unknown resource URI.
	codeResourceNotFound = -32002
)

// RPCError is a JSON-RPC error. Upstream sessions return it for an error the
// upstream answered with, so the gateway passes code, message and data
// through unchanged.
type RPCError struct {
	Code    int64
	Message string
	Data    json.RawMessage
}

func (e *RPCError) Error() string {
	return fmt.Sprintf("JSON-RPC error %d: %s", e.Code, e.Message)
}

// message is one incoming JSON-RPC message: only the envelope is decoded.
type message struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   json.RawMessage `json:"error,omitempty"`
}

func (m *message) isRequest() bool      { return m.Method != "" && len(m.ID) > 0 && !isNull(m.ID) }
func (m *message) isNotification() bool { return m.Method != "" && (len(m.ID) == 0 || isNull(m.ID)) }

func isNull(b []byte) bool { return string(bytes.TrimSpace(b)) == "null" }

// parseMessage decodes one JSON-RPC message. The error is an *RPCError ready
// to send (parse error or invalid request).
func parseMessage(b []byte) (*message, *RPCError) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, &RPCError{Code: codeInvalidRequest, Message: "empty request body: send one JSON-RPC 2.0 message"}
	}
	if b[0] == '[' {
		return nil, &RPCError{Code: codeInvalidRequest, Message: "JSON-RPC batches are not supported: send one message per request"}
	}
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			return nil, &RPCError{Code: codeInvalidRequest, Message: fmt.Sprintf("invalid JSON-RPC message: field %q has the wrong type", te.Field)}
		case errors.As(err, &se):
			return nil, &RPCError{Code: codeParseError, Message: fmt.Sprintf("parse error: malformed JSON at byte %d: %v", se.Offset, err)}
		default:
			return nil, &RPCError{Code: codeParseError, Message: "parse error: " + err.Error()}
		}
	}
	if m.JSONRPC != "2.0" {
		return nil, &RPCError{Code: codeInvalidRequest, Message: `invalid JSON-RPC message: "jsonrpc" must be "2.0"`}
	}
	if len(m.ID) > 0 && !isNull(m.ID) && m.ID[0] != '"' && (m.ID[0] < '0' || m.ID[0] > '9') && m.ID[0] != '-' {
		return nil, &RPCError{Code: codeInvalidRequest, Message: "invalid JSON-RPC message: id must be a string or a number"}
	}
	if m.Method == "" && len(m.Result) == 0 && len(m.Error) == 0 {
		return nil, &RPCError{Code: codeInvalidRequest, Message: "invalid JSON-RPC message: no method, result or error"}
	}
	return &m, nil
}

var nullID = json.RawMessage("null")

// appendResult appends a JSON-RPC success response.
func appendResult(dst []byte, id, result json.RawMessage) []byte {
	if len(id) == 0 {
		id = nullID
	}
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	dst = append(dst, id...)
	dst = append(dst, `,"result":`...)
	dst = append(dst, result...)
	return append(dst, '}')
}

// appendError appends a JSON-RPC error response.
func appendError(dst []byte, id json.RawMessage, e *RPCError) []byte {
	if len(id) == 0 {
		id = nullID
	}
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	dst = append(dst, id...)
	dst = append(dst, `,"error":{"code":`...)
	dst = strconv.AppendInt(dst, e.Code, 10)
	dst = append(dst, `,"message":`...)
	dst = appendJSONString(dst, e.Message)
	if len(e.Data) > 0 {
		dst = append(dst, `,"data":`...)
		dst = append(dst, e.Data...)
	}
	return append(dst, "}}"...)
}
