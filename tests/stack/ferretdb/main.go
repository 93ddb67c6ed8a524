// Command ferretdb runs FerretDB v1 for the assetfs test stack, on PostgreSQL
// (-postgresql-url) or on its embedded SQLite backend (-dir). FerretDB's own command
// panics when built from the module proxy (its version.txt is not in the module zip);
// as a library it does not.
//
// PostgreSQL is the default backend of tests/stack/up because FerretDB 1.x pushes
// equality filters on any top-level field down to it (as an indexed MongoDB query would
// be answered), while on SQLite only a filter that is exactly {_id: X} avoids a full scan
// decoded in Go.
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dir := flag.String("dir", "", "directory for the SQLite databases (SQLite backend)")
	pgURL := flag.String("postgresql-url", "", "PostgreSQL connection URL (PostgreSQL backend)")
	flag.Parse()

	cfg := ferretdb.Config{Listener: ferretdb.ListenerConfig{TCP: *listen}}
	switch {
	case *pgURL != "" && *dir == "":
		cfg.Handler = "postgresql"
		cfg.PostgreSQLURL = *pgURL
	case *dir != "" && *pgURL == "":
		if err := os.MkdirAll(*dir, 0o700); err != nil {
			log.Fatal(err)
		}
		cfg.Handler = "sqlite"
		cfg.SQLiteURL = "file:" + *dir + "/"
	default:
		log.Fatal("exactly one of -postgresql-url and -dir is required")
	}

	f, err := ferretdb.New(&cfg)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	f.Run(ctx)
}
