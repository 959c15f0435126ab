package wire

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HTTPStatus is the HTTP status a client is answered for a mesh error
// code: the one mapping the edge answers with, the sidecar counts in its
// metrics and the SDK reports. CODE_OK has no status of its own (the
// handler's applies) and gives 200.
func (c Code) HTTPStatus() int {
	switch c {
	case Code_CODE_OK:
		return http.StatusOK
	case Code_CODE_DEADLINE_EXCEEDED:
		return http.StatusGatewayTimeout
	case Code_CODE_UNAVAILABLE, Code_CODE_OVERLOADED:
		return http.StatusServiceUnavailable
	case Code_CODE_BAD_REQUEST:
		return http.StatusBadRequest
	case Code_CODE_FORBIDDEN:
		return http.StatusForbidden
	default: // CODE_NO_INSTANCE, CODE_INTERNAL and codes newer than this build
		return http.StatusBadGateway
	}
}

// ErrorCode is the short machine-readable name of c in error answers
// ("deadline_exceeded").
func (c Code) ErrorCode() string {
	switch c {
	case Code_CODE_DEADLINE_EXCEEDED:
		return "deadline_exceeded"
	case Code_CODE_UNAVAILABLE, Code_CODE_OVERLOADED:
		return "unavailable"
	case Code_CODE_NO_INSTANCE:
		return "no_instance"
	case Code_CODE_BAD_REQUEST:
		return "bad_request"
	case Code_CODE_FORBIDDEN:
		return "forbidden"
	default:
		return "bad_gateway"
	}
}

// HTTPStatus is the status r stands for: the handler's for CODE_OK, the
// code's otherwise.
func (r *Reply) HTTPStatus() int {
	if r.GetCode() == Code_CODE_OK {
		return int(r.GetStatus())
	}
	return r.GetCode().HTTPStatus()
}

// GRPCStatus is the gRPC status code of an answer: its grpc-status
// trailer, or header for a trailers-only answer. ok is false for an answer
// that is not gRPC's or carries none.
func GRPCStatus(headers, trailers []*Header) (code int, ok bool) {
	v := HeaderValue(trailers, "Grpc-Status")
	if v == "" {
		v = HeaderValue(headers, "Grpc-Status")
	}
	if v == "" {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= 0
}

// GRPCHTTPStatus is the HTTP status a gRPC status code stands for in the
// mesh's figures (metrics, canary analysis, outlier detection): the
// mapping of gRPC's own HTTP gateway, so that UNAVAILABLE in a 200 counts
// as the 503 it is.
func GRPCHTTPStatus(code int) int {
	switch code {
	case 0: // OK
		return http.StatusOK
	case 1: // CANCELLED
		return 499
	case 3, 9, 11: // INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
		return http.StatusBadRequest
	case 4: // DEADLINE_EXCEEDED
		return http.StatusGatewayTimeout
	case 5: // NOT_FOUND
		return http.StatusNotFound
	case 6, 10: // ALREADY_EXISTS, ABORTED
		return http.StatusConflict
	case 7: // PERMISSION_DENIED
		return http.StatusForbidden
	case 8: // RESOURCE_EXHAUSTED
		return http.StatusTooManyRequests
	case 12: // UNIMPLEMENTED
		return http.StatusNotImplemented
	case 14: // UNAVAILABLE
		return http.StatusServiceUnavailable
	case 16: // UNAUTHENTICATED
		return http.StatusUnauthorized
	default: // UNKNOWN, INTERNAL, DATA_LOSS and codes newer than this build
		return http.StatusInternalServerError
	}
}

// HTTPGRPCStatus is the gRPC status code a gRPC client is answered for an
// error the mesh gives with this HTTP status (gRPC's own mapping of HTTP
// statuses, and CANCELLED for a client that left).
func HTTPGRPCStatus(status int) int {
	switch status {
	case 499:
		return 1 // CANCELLED
	case http.StatusBadRequest:
		return 13 // INTERNAL
	case http.StatusUnauthorized:
		return 16 // UNAUTHENTICATED
	case http.StatusForbidden:
		return 7 // PERMISSION_DENIED
	case http.StatusNotFound, http.StatusNotImplemented:
		return 12 // UNIMPLEMENTED
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return 8 // RESOURCE_EXHAUSTED
	case http.StatusGatewayTimeout:
		return 4 // DEADLINE_EXCEEDED
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return 14 // UNAVAILABLE
	default:
		return 2 // UNKNOWN
	}
}

// IsGRPC reports whether a Content-Type is gRPC's.
func IsGRPC(contentType string) bool {
	return strings.HasPrefix(contentType, "application/grpc")
}

// FigureStatus is the status r stands for in the mesh's figures: HTTPStatus,
// or for a gRPC answer its gRPC status's (GRPCHTTPStatus).
func (r *Reply) FigureStatus() int {
	if r.GetCode() == Code_CODE_OK {
		if c, ok := GRPCStatus(r.GetHeaders(), r.GetTrailers()); ok {
			return GRPCHTTPStatus(c)
		}
	}
	return r.HTTPStatus()
}

// ParseGRPCTimeout reads a grpc-timeout header: up to 8 digits and a unit
// (H, M, S, m, u, n).
func ParseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// FormatGRPCTimeout writes d as a grpc-timeout header, in the finest unit
// that fits 8 digits.
func FormatGRPCTimeout(d time.Duration) string {
	if d <= 0 {
		return "1n"
	}
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{time.Nanosecond, "n"}, {time.Microsecond, "u"}, {time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}} {
		if v := d / u.unit; v < 1e8 {
			return strconv.FormatInt(int64(v), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(min(d/time.Hour, 99999999)), 10) + "H"
}
