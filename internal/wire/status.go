package wire

import "net/http"

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
