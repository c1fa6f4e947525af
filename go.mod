module github.com/tessera-streams/tessera

go 1.26

require (
	github.com/axiomhq/hyperloglog v0.2.5
	github.com/cespare/xxhash/v2 v2.3.0
	google.golang.org/protobuf v1.36.5
	pgregory.net/rapid v1.2.0
)

require (
	github.com/davecgh/go-spew v1.1.2-0.20180830191138-d8f796af33cc // indirect
	github.com/dgryski/go-metro v0.0.0-20180109044635-280f6062b5bc // indirect
	github.com/google/go-cmp v0.6.0 // indirect
	github.com/kamstrup/intmap v0.5.1 // indirect
	github.com/pmezard/go-difflib v1.0.1-0.20181226105442-5d4384ee4fb2 // indirect
)
