package api

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3.1 description of the API, written by hand and
// kept in sync with the routes by TestOpenAPIMatchesRoutes.
//
//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the OpenAPI document the daemon serves.
func OpenAPI() []byte { return openAPI }

func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPI)
}
