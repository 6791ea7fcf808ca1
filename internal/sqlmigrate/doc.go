// Package sqlmigrate is the migration machinery shared by the packages that
// own PostgreSQL tables (outbox, participants): embedded, versioned up/down
// SQL files, applied in one transaction under an advisory lock, with the
// applied versions recorded in a table of their own.
//
// # Files
//
// A migration set is a directory of files named
// <version>_<name>.up.sql and <version>_<name>.down.sql. Versions run
// 1, 2, 3... without gaps, every version has both files and one name.
// [Load] checks this; [MustLoad] panics on a bad set, for sets embedded in
// the binary and loaded at init:
//
//	//go:embed migrations/*.sql
//	var migrationFS embed.FS
//
//	var migrations = sqlmigrate.MustLoad(migrationFS, "migrations")
//
// # Applying
//
// [Apply] brings one table to a target version:
//
//	err := sqlmigrate.Apply(ctx, pool, sqlmigrate.Set{
//		Name:       "outbox",
//		Migrations: migrations,
//		Table:      qtable,    // quoted, for messages
//		Schema:     schema,    // created if missing; "" for none
//		Versions:   qversions, // quoted <table>_migrations
//		LockKey:    sqlmigrate.LockKey("jetsaga/outbox/migrate\x00" + qtable),
//		Render:     func(sql string) string { return strings.ReplaceAll(sql, "{{table}}", qtable) },
//	}, sqlmigrate.Latest)
//
// Everything happens in one transaction: take the transaction-scoped
// advisory lock LockKey (so concurrent calls from several processes
// serialise), create the schema if it is missing, create the versions table
// if it is missing, read the current version, then run the up files (or the
// down files, newest first) to the target, recording each version. Any
// failure rolls all of it back. A database at a version beyond the set's
// newest was migrated by a newer release: Apply refuses it with an error
// matching [ErrTooNew] (and Set.TooNew, if set) and changes nothing.
//
// Render fills the placeholders of the SQL files ({{table}} and the like):
// the files hold no table names, so one set serves any number of tables.
//
// # Identifiers
//
// [ValidIdentifier] checks the plain lower-case identifiers these packages
// accept as table and schema names; the callers wrap its error in their own
// configuration error that names the field.
package sqlmigrate
