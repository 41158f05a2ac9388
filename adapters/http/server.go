package httpadapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/go-chi/cors"
	"github.com/go-chi/httprate"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgebridge/gateway/bridge"
)

// Route labels of the generic routes in metrics.
const (
	routeTopics  = "topics"
	routePublish = "publish"
)

// Server is the HTTP adapter. Create it with New, then Start; Shutdown stops
// it. All methods are safe for concurrent use.
type Server struct {
	cfg     Config
	b       *bridge.Broker
	log     *slog.Logger
	metrics *metrics
	gather  prometheus.Gatherer

	router  atomic.Pointer[chi.Mux] // swapped by Remount
	handler http.Handler
	mapped  mappedRoutes // the mapping table's routes (routes.go)

	// closing is closed when Shutdown starts: SSE streams end, new ones are
	// refused.
	closing   chan struct{}
	sseOpen   atomic.Int64
	closeOnce sync.Once

	mu       sync.Mutex
	srv      *http.Server
	ln       net.Listener
	served   chan struct{} // closed when the accept loop has returned
	started  bool
	shutdown bool
}

// New checks cfg, registers the metrics and builds the router. Nothing is
// bound until Start.
func New(cfg Config, b *bridge.Broker) (*Server, error) {
	if b == nil {
		return nil, errors.New("http: a broker is required")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var reg prometheus.Registerer
	var gather prometheus.Gatherer
	if cfg.Registry != nil {
		reg, gather = cfg.Registry, cfg.Registry
	} else {
		r := prometheus.NewRegistry()
		reg, gather = r, r
	}
	m, err := newMetrics(reg, b)
	if err != nil {
		return nil, fmt.Errorf("http: metrics: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		b:       b,
		log:     cfg.Logger.With("component", "http"),
		metrics: m,
		gather:  gather,
		closing: make(chan struct{}),
	}
	mux, err := s.buildRouter(cfg.Mount)
	if err != nil {
		return nil, err
	}
	s.router.Store(mux)
	s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.router.Load().ServeHTTP(w, r)
	})
	return s, nil
}

// Remount rebuilds the router with m as the extra routes and swaps it in
// atomically; requests in flight finish on the old router. On error (a bad
// or duplicate pattern) the old router stays in force.
func (s *Server) Remount(m RouteMounter) error {
	mux, err := s.buildRouter(m)
	if err != nil {
		return err
	}
	s.router.Store(mux)
	return nil
}

// Handler is the adapter's whole HTTP handler (for tests and benchmarks).
func (s *Server) Handler() http.Handler { return s.handler }

// buildRouter assembles the chi router. chi panics on a bad pattern: the
// panic becomes an error.
func (s *Server) buildRouter(mount RouteMounter) (mux *chi.Mux, err error) {
	defer func() {
		if p := recover(); p != nil {
			mux, err = nil, fmt.Errorf("http: routes: %v", p)
		}
	}()
	mux = chi.NewMux()
	mux.Use(s.recoverer)
	if len(s.cfg.CORSOrigins) > 0 {
		mux.Use(cors.Handler(cors.Options{
			AllowedOrigins: s.cfg.CORSOrigins,
			AllowedMethods: []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete},
			AllowedHeaders: []string{"Content-Type", "Accept", "Authorization", "Last-Event-ID",
				"MQTT-User-Property", "MQTT-Message-Expiry"},
			ExposedHeaders: []string{"Retry-After", "MQTT-User-Property", "MQTT-Message-Expiry"},
			MaxAge:         600,
		}))
	}
	mux.NotFound(func(w http.ResponseWriter, r *http.Request) {
		s.writeProblem(w, r, problem{Type: typeNotFound, Status: http.StatusNotFound,
			Title: "no route for " + r.URL.EscapedPath() + "; see /openapi.json and /routes"})
	})
	mux.MethodNotAllowed(s.methodNotAllowed)

	// Operational endpoints: never rate limited.
	mux.Get("/healthz", s.healthz)
	mux.Get("/readyz", s.readyz)
	mux.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(s.gather, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}))
	mux.Get("/openapi.json", serveOpenAPI)

	mux.Group(func(r chi.Router) {
		if s.cfg.RatePerClient > 0 {
			r.Use(middleware.ClientIPFromRemoteAddr)
			r.Use(httprate.LimitBy(s.cfg.RatePerClient, time.Second,
				func(r *http.Request) (string, error) {
					return httprate.CanonicalizeIP(middleware.GetClientIP(r.Context())), nil
				},
				httprate.WithLimitHandler(func(w http.ResponseWriter, r *http.Request) {
					s.writeProblem(w, r, problem{Type: typeRateLimited, Status: http.StatusTooManyRequests,
						Title: fmt.Sprintf("rate limit of %d requests per second per client exceeded; retry after the Retry-After delay", s.cfg.RatePerClient)})
				}),
				httprate.WithResponseHeaders(httprate.ResponseHeaders{RetryAfter: "Retry-After"}),
			))
		}
		r.Get("/routes", s.routes)
		if mount != nil {
			mount(r)
		}
		if s.cfg.Generic {
			r.Post("/topics/*", s.topicPost)
			r.Put("/topics/*", s.topicPut)
			r.Delete("/topics/*", s.topicDelete)
			r.Get("/topics/*", s.topicGet)
			r.Head("/topics/*", s.topicGet)
			r.Post("/publish", s.publishBatch)
		}
	})
	return mux, nil
}

// recoverer turns a panic in a handler into a 500 problem (or a closed
// stream) and a log line, instead of a crashed connection with no answer.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", p)
				s.writeProblem(w, r, problem{Type: typeInternal, Status: http.StatusInternalServerError, Title: "internal error"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// allowMethods is the set of methods probed to build an Allow header.
var allowMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch}

// methodNotAllowed answers 405 with the Allow header listing the methods the
// path does accept (chi's custom 405 handler is not told them, so they are
// probed on the router).
func (s *Server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	mux := s.router.Load()
	path := r.URL.RawPath
	if path == "" {
		path = r.URL.Path
	}
	var allowed []string
	for _, m := range allowMethods {
		if mux.Match(chi.NewRouteContext(), m, path) {
			allowed = append(allowed, m)
		}
	}
	for _, m := range allowed {
		w.Header().Add("Allow", m)
	}
	s.writeProblem(w, r, problem{Type: typeMethod, Status: http.StatusMethodNotAllowed,
		Title: fmt.Sprintf("method %s is not allowed on %s; allowed: %v", r.Method, r.URL.EscapedPath(), allowed)})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.b.Running() {
		s.writeError(w, r, bridge.ErrClosed)
		return
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			s.writeProblem(w, r, problem{Type: typeUnavailable, Status: http.StatusServiceUnavailable,
				Title: "not ready: " + err.Error()})
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
}

func (s *Server) routes(w http.ResponseWriter, _ *http.Request) {
	var v any = []any{}
	if s.cfg.Routes != nil {
		if rv := s.cfg.Routes(); rv != nil {
			v = rv
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Start binds the listener and serves in the background; it returns once
// the adapter listens (see Addr for the bound address).
func (s *Server) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.shutdown {
		return errors.New("http: Start called twice or after Shutdown")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Address)
	if err != nil {
		return fmt.Errorf("http listener %s: %w", s.cfg.Address, err)
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if s.cfg.TLS != nil {
		srv.TLSConfig = s.cfg.TLS.Clone()
	}
	s.srv, s.ln, s.started = srv, ln, true
	s.served = make(chan struct{})
	go func() { // owned: Shutdown waits for served
		defer close(s.served)
		var err error
		if srv.TLSConfig != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	s.log.Debug("http adapter listening", "addr", ln.Addr().String(), "tls", s.cfg.TLS != nil)
	return nil
}

// Addr is the bound host:port, or "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Shutdown ends every SSE stream, stops accepting connections and waits for
// in-flight requests to finish or ctx to end (then closes the rest). It is
// idempotent; calls after the first return nil at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return nil
	}
	s.shutdown = true
	srv, served := s.srv, s.served
	s.mu.Unlock()
	s.closeOnce.Do(func() { close(s.closing) })
	s.endMappedStreams()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		_ = srv.Close()
	}
	<-served
	return err
}
