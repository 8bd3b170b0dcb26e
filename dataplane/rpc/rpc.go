// Package rpc reads and writes JSON-RPC 2.0 messages as raw bytes for the data
// plane's hot path: it decodes the envelope (id, method, error) and leaves
// params and results as the bytes that arrived, so that whatever the gateway
// does not need to understand passes through unchanged and cheaply. It is
// also the data plane's one raw JSON toolkit (scan.go): finding, reading and
// replacing the members of params and results without decoding them.
package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Standard JSON-RPC 2.0 error codes.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
)

// Message is one JSON-RPC 2.0 request, notification or response.
//
// Messages returned by Parse alias the parsed buffer: ID, Params, Result and
// Error.Data point into it, so the buffer must not be modified while the
// message is in use.
type Message struct {
	// ID is the id's JSON bytes (a number or a string; "null" only in error
	// responses to unreadable requests); nil for notifications.
	ID json.RawMessage
	// Method is set for requests and notifications.
	Method string
	// Params is nil when absent.
	Params json.RawMessage
	// Result is set in successful responses.
	Result json.RawMessage
	// Error is set in error responses.
	Error *Error
}

// commonMethod returns the method named by the JSON string v when it is one
// of those sent on every call, as a constant: no allocation.
func commonMethod(v []byte) (string, bool) {
	if len(v) < 2 {
		return "", false
	}
	switch s := v[1 : len(v)-1]; string(s) {
	case "tools/call":
		return "tools/call", true
	case "resources/read":
		return "resources/read", true
	case "prompts/get":
		return "prompts/get", true
	case "tools/list":
		return "tools/list", true
	case "ping":
		return "ping", true
	case "notifications/progress":
		return "notifications/progress", true
	}
	return "", false
}

// IsRequest reports whether m is a request (a method and an id).
func (m *Message) IsRequest() bool { return m.Method != "" && m.ID != nil }

// IsNotification reports whether m is a notification (a method, no id).
func (m *Message) IsNotification() bool { return m.Method != "" && m.ID == nil }

// IsResponse reports whether m is a response (a result or an error).
func (m *Message) IsResponse() bool { return m.Method == "" && (m.Result != nil || m.Error != nil) }

// Error is a JSON-RPC error object. It is passed through to clients unchanged.
type Error struct {
	Code    int64
	Message string
	// Data is the error's optional data member, as raw JSON; nil when absent.
	Data json.RawMessage
}

// Error implements error.
func (e *Error) Error() string {
	return fmt.Sprintf("jsonrpc error %d: %s", e.Code, e.Message)
}

// NewError returns an Error with the code and message.
func NewError(code int64, message string) *Error {
	return &Error{Code: code, Message: message}
}

// Parse decodes one JSON-RPC 2.0 message. The input must be a single JSON
// object with "jsonrpc":"2.0"; batches are refused. When a member appears more
// than once the last one wins, as in the JSON parsers of most MCP servers.
func Parse(b []byte) (*Message, error) {
	it, err := newObjIter(b)
	if err != nil {
		return nil, fmt.Errorf("parse JSON-RPC message: %w", err)
	}
	var (
		m         Message
		version   bool
		hasMethod bool
		rawError  []byte
	)
	for {
		f, ok, err := it.next()
		if err != nil {
			return nil, fmt.Errorf("parse JSON-RPC message: %w", err)
		}
		if !ok {
			break
		}
		v := b[f.ValueStart:f.ValueEnd]
		switch string(f.key(b)) {
		case "jsonrpc":
			if string(v) != `"2.0"` {
				return nil, errors.New(`parse JSON-RPC message: "jsonrpc" must be "2.0"`)
			}
			version = true
		case "id":
			switch v[0] {
			case '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
				m.ID = v
			case 'n':
				m.ID = v // null: allowed in error responses only, checked below
			default:
				return nil, errors.New(`parse JSON-RPC message: "id" must be a string or a number`)
			}
		case "method":
			if v[0] != '"' {
				return nil, errors.New(`parse JSON-RPC message: "method" must be a string`)
			}
			s, ok := commonMethod(v)
			if !ok {
				var err error
				if s, err = unquote(v); err != nil {
					return nil, fmt.Errorf("parse JSON-RPC message: method: %w", err)
				}
			}
			m.Method, hasMethod = s, true
		case "params":
			if v[0] != '{' && v[0] != '[' {
				if string(v) == "null" {
					m.Params = nil
					continue
				}
				return nil, errors.New(`parse JSON-RPC message: "params" must be an object or an array`)
			}
			m.Params = v
		case "result":
			m.Result = v
		case "error":
			rawError = v
		}
	}
	if !version {
		return nil, errors.New(`parse JSON-RPC message: missing "jsonrpc":"2.0"`)
	}
	if rawError != nil {
		e, err := parseError(rawError)
		if err != nil {
			return nil, err
		}
		m.Error = e
	}
	switch {
	case hasMethod:
		if m.Method == "" {
			return nil, errors.New(`parse JSON-RPC message: "method" is empty`)
		}
		if m.Result != nil || m.Error != nil {
			return nil, errors.New(`parse JSON-RPC message: a request must not carry "result" or "error"`)
		}
		if string(m.ID) == "null" {
			return nil, errors.New(`parse JSON-RPC message: a request id must not be null`)
		}
	case m.Result != nil && m.Error != nil:
		return nil, errors.New(`parse JSON-RPC message: a response must not carry both "result" and "error"`)
	case m.Result != nil || m.Error != nil:
		if m.ID == nil {
			return nil, errors.New(`parse JSON-RPC message: a response needs an "id"`)
		}
		if m.Result != nil && string(m.ID) == "null" {
			return nil, errors.New(`parse JSON-RPC message: a result needs a non-null "id"`)
		}
	default:
		return nil, errors.New(`parse JSON-RPC message: neither "method" nor "result" nor "error"`)
	}
	return &m, nil
}

func parseError(b []byte) (*Error, error) {
	it, err := newObjIter(b)
	if err != nil {
		return nil, errors.New(`parse JSON-RPC message: "error" must be an object`)
	}
	e := &Error{}
	var hasCode bool
	for {
		f, ok, err := it.next()
		if err != nil {
			return nil, fmt.Errorf("parse JSON-RPC error object: %w", err)
		}
		if !ok {
			break
		}
		v := b[f.ValueStart:f.ValueEnd]
		switch string(f.key(b)) {
		case "code":
			c, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil {
				// Some servers send codes like -32000.0; accept integral floats.
				fl, ferr := strconv.ParseFloat(string(v), 64)
				if ferr != nil || fl != float64(int64(fl)) {
					return nil, errors.New(`parse JSON-RPC error object: "code" must be an integer`)
				}
				c = int64(fl)
			}
			e.Code, hasCode = c, true
		case "message":
			if v[0] != '"' {
				return nil, errors.New(`parse JSON-RPC error object: "message" must be a string`)
			}
			s, err := unquote(v)
			if err != nil {
				return nil, fmt.Errorf("parse JSON-RPC error object: message: %w", err)
			}
			e.Message = s
		case "data":
			e.Data = v
		}
	}
	if !hasCode {
		return nil, errors.New(`parse JSON-RPC error object: missing "code"`)
	}
	return e, nil
}

// AppendMessage appends the JSON encoding of m, with "jsonrpc":"2.0", to dst.
// Raw members are copied as they are; they must be valid JSON.
func AppendMessage(dst []byte, m *Message) []byte {
	dst = append(dst, `{"jsonrpc":"2.0"`...)
	if m.ID != nil {
		dst = append(dst, `,"id":`...)
		dst = append(dst, m.ID...)
	}
	if m.Method != "" {
		dst = append(dst, `,"method":`...)
		dst = AppendString(dst, m.Method)
		if len(m.Params) > 0 {
			dst = append(dst, `,"params":`...)
			dst = append(dst, m.Params...)
		}
	} else if m.Error != nil {
		dst = append(dst, `,"error":{"code":`...)
		dst = strconv.AppendInt(dst, m.Error.Code, 10)
		dst = append(dst, `,"message":`...)
		dst = AppendString(dst, m.Error.Message)
		if len(m.Error.Data) > 0 {
			dst = append(dst, `,"data":`...)
			dst = append(dst, m.Error.Data...)
		}
		dst = append(dst, '}')
	} else {
		dst = append(dst, `,"result":`...)
		if len(m.Result) > 0 {
			dst = append(dst, m.Result...)
		} else {
			dst = append(dst, "{}"...)
		}
	}
	return append(dst, '}')
}

// StringField returns the value of the top-level string member key of the JSON
// object obj. It reports false when obj is not a valid object, the member is
// missing or its value is not a string. When the key appears more than once the
// last one wins, as in the JSON parsers of most MCP servers.
func StringField(obj json.RawMessage, key string) (string, bool) {
	it, err := newObjIter(obj)
	if err != nil {
		return "", false
	}
	var last []byte
	for {
		f, ok, err := it.next()
		if err != nil {
			return "", false
		}
		if !ok {
			break
		}
		if f.Is(obj, key) {
			last = obj[f.ValueStart:f.ValueEnd]
		}
	}
	if last == nil || last[0] != '"' {
		return "", false
	}
	s, err := unquote(last)
	if err != nil {
		return "", false
	}
	return s, true
}

// Unquote decodes the JSON string literal s, quotes included; false when s
// is not a valid one.
func Unquote(s []byte) (string, bool) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return "", false
	}
	v, err := unquote(s)
	return v, err == nil
}

// ReplaceStringField appends to dst the JSON object obj with the value of its
// top-level member key replaced by the string value (every occurrence, should
// the key repeat), or with the member added first when absent. A nil, empty or
// null obj counts as {}. When obj is not a valid JSON object it is appended
// unchanged (the receiver will reject it, as it would have without us).
func ReplaceStringField(dst []byte, obj json.RawMessage, key, value string) []byte {
	if len(obj) == 0 || string(obj) == "null" {
		dst = append(dst, '{')
		dst = AppendString(dst, key)
		dst = append(dst, ':')
		dst = AppendString(dst, value)
		return append(dst, '}')
	}
	return replaceMember(dst, obj, key, nil, value, true)
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string (quoted and escaped) to dst.
// Invalid UTF-8 is copied as is.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
