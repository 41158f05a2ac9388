package httpadapter

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/edgebridge/gateway/bridge"
)

// problem is an RFC 9457 problem details object. Title is written for a
// person: it says what was wrong with the request in terms they can fix.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Instance is the request path the problem occurred on.
	Instance string `json:"instance,omitempty"`
}

// Problem type URIs. They identify the kind of problem; they are not meant
// to be dereferenced.
const (
	typeBadRequest      = "urn:gateway:problem:bad-request"
	typeInvalidTopic    = "urn:gateway:problem:invalid-topic"
	typeNotFound        = "urn:gateway:problem:not-found"
	typeNoRetained      = "urn:gateway:problem:no-retained-message"
	typeMethod          = "urn:gateway:problem:method-not-allowed"
	typeTooLarge        = "urn:gateway:problem:payload-too-large"
	typeMediaType       = "urn:gateway:problem:unsupported-media-type"
	typeRateLimited     = "urn:gateway:problem:rate-limited"
	typeUnavailable     = "urn:gateway:problem:unavailable"
	typeTooManyStreams  = "urn:gateway:problem:too-many-streams"
	typeInternal        = "urn:gateway:problem:internal"
	typeRequestCanceled = "urn:gateway:problem:request-canceled"
	typeNoReply         = "urn:gateway:problem:no-reply"
)

// errBadRequest wraps request errors that are the client's fault (400).
var errBadRequest = errors.New("bad request")

// badRequest is a 400 with a title.
type badRequest string

func (e badRequest) Error() string { return string(e) }
func (e badRequest) Unwrap() error { return errBadRequest }

// tooLarge is a payload over the limit (413).
type tooLarge struct{ limit int64 }

func (e *tooLarge) Error() string {
	return "payload is larger than the limit of " + strconv.FormatInt(e.limit, 10) + " bytes"
}

// problemFor is the adapter's one error → status table (STYLE §9): the same
// bridge error gets the same answer on every route.
func problemFor(err error) problem {
	var te *bridge.TopicError
	var mbe *http.MaxBytesError
	var tl *tooLarge
	switch {
	case errors.As(err, &te):
		return problem{Type: typeInvalidTopic, Status: http.StatusBadRequest, Title: te.Reason + ": " + te.Topic}
	case errors.Is(err, bridge.ErrInvalidTopic):
		return problem{Type: typeInvalidTopic, Status: http.StatusBadRequest, Title: err.Error()}
	case errors.Is(err, bridge.ErrInvalidQoS):
		return problem{Type: typeBadRequest, Status: http.StatusBadRequest, Title: err.Error()}
	case errors.Is(err, errBadRequest):
		return problem{Type: typeBadRequest, Status: http.StatusBadRequest, Title: err.Error()}
	case errors.As(err, &mbe):
		return problem{Type: typeTooLarge, Status: http.StatusRequestEntityTooLarge,
			Title: "payload is larger than the limit of " + strconv.FormatInt(mbe.Limit, 10) + " bytes"}
	case errors.As(err, &tl):
		return problem{Type: typeTooLarge, Status: http.StatusRequestEntityTooLarge,
			Title: "payload is larger than the limit of " + strconv.FormatInt(tl.limit, 10) + " bytes"}
	case errors.Is(err, bridge.ErrClosed):
		return problem{Type: typeUnavailable, Status: http.StatusServiceUnavailable,
			Title: "the MQTT broker is not running; retry later"}
	case errors.Is(err, bridge.ErrOverloaded):
		return problem{Type: typeUnavailable, Status: http.StatusServiceUnavailable,
			Title: "the MQTT broker is overloaded; retry later", Detail: err.Error()}
	case errors.Is(err, bridge.ErrNoReply):
		return problem{Type: typeNoReply, Status: http.StatusGatewayTimeout, Title: err.Error()}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return problem{Type: typeRequestCanceled, Status: http.StatusServiceUnavailable,
			Title: "the request was canceled before the broker took it; retry"}
	}
	return problem{Type: typeInternal, Status: http.StatusInternalServerError, Title: "internal error", Detail: err.Error()}
}

// writeError answers err as problem+json.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	p := problemFor(err)
	if p.Status == http.StatusInternalServerError {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	s.writeProblem(w, r, p)
}

// writeProblem answers p as application/problem+json, with Retry-After on
// 503 and 429 answers, and counts it in the error metric.
func (s *Server) writeProblem(w http.ResponseWriter, r *http.Request, p problem) {
	if p.Instance == "" {
		p.Instance = r.URL.EscapedPath()
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	if (p.Status == http.StatusServiceUnavailable || p.Status == http.StatusTooManyRequests) && h.Get("Retry-After") == "" {
		h.Set("Retry-After", retryAfter)
	}
	s.metrics.errors(p.Status)
	w.WriteHeader(p.Status)
	if r.Method == http.MethodHead {
		return
	}
	_ = json.NewEncoder(w).Encode(p)
}
