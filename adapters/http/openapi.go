package httpadapter

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3.1 document of the whole HTTP API, served at
// /openapi.json. TestOpenAPICoversEveryRoute fails when a chi route is
// missing from it.
//
//go:embed openapi.json
var openAPI []byte

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI)
}
