import Foundation
import GRDB

/// The lnlens results database: a small value around a GRDB connection with named schema
/// migrations. Writers use a `DatabasePool` (WAL, so readers never block the writer and two
/// processes can share one file); `openReadOnly` gives a connection that cannot write.
public struct ResultsDatabase: Sendable {
    /// The file path, or `:memory:`.
    public let path: String
    let reader: any DatabaseReader
    /// nil when opened read-only.
    let writer: (any DatabaseWriter)?

    /// Opens (creating it and its parent folder if needed) the database at `path` for writing,
    /// in WAL mode, and migrates it to the current schema.
    public init(path: String) throws {
        let url = URL(fileURLWithPath: path)
        do {
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        } catch {
            throw ResultsStoreError.cannotOpen(path: path, reason: "cannot create its folder (\(error.localizedDescription))")
        }
        let pool: DatabasePool
        do {
            pool = try DatabasePool(path: path, configuration: Self.configuration(readonly: false))
        } catch let error as DatabaseError {
            throw ResultsStoreError.cannotOpen(path: path, reason: error.oneLineMessage)
        }
        try self.init(path: path, writer: pool)
    }

    /// An empty, migrated database in memory (tests).
    public static func inMemory() throws -> ResultsDatabase {
        let queue = try DatabaseQueue(configuration: configuration(readonly: false))
        return try ResultsDatabase(path: ":memory:", writer: queue)
    }

    /// Opens an existing database for reading only (`query`, `diff`, `report`). A missing file
    /// is an error naming it; it is never created.
    public static func openReadOnly(path: String) throws -> ResultsDatabase {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw ResultsStoreError.databaseNotFound(path: path)
        }
        let queue: DatabaseQueue
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration(readonly: true))
            let current = try queue.read { db in
                (try schemaMigrator.hasCompletedMigrations(db), try schemaMigrator.hasBeenSuperseded(db))
            }
            if current.1 { throw ResultsStoreError.newerSchema(path: path) }
            if !current.0 { throw ResultsStoreError.schemaNotCurrent(path: path) }
        } catch let error as DatabaseError {
            throw ResultsStoreError.cannotOpen(path: path, reason: error.oneLineMessage)
        }
        return ResultsDatabase(path: path, reader: queue, writer: nil)
    }

    private init(path: String, writer: any DatabaseWriter) throws {
        self.path = path
        self.reader = writer
        self.writer = writer
        do {
            if try writer.read({ try Self.schemaMigrator.hasBeenSuperseded($0) }) {
                throw ResultsStoreError.newerSchema(path: path)
            }
            // Another program's database: never write our tables into it.
            let foreign = try writer.read { db in
                try !db.tableExists("grdb_migrations")
                    && Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")! > 0
            }
            if foreign { throw ResultsStoreError.notLNLensDatabase(path: path) }
            try Self.schemaMigrator.migrate(writer)
        } catch let error as DatabaseError {
            throw ResultsStoreError.cannotOpen(path: path, reason: error.oneLineMessage)
        }
    }

    private init(path: String, reader: any DatabaseReader, writer: (any DatabaseWriter)?) {
        self.path = path
        self.reader = reader
        self.writer = writer
    }

    /// How long a write waits for another process's transaction before failing.
    static let busyTimeout: TimeInterval = 60

    static func configuration(readonly: Bool) -> Configuration {
        var config = Configuration()
        config.readonly = readonly
        config.foreignKeysEnabled = true
        config.busyMode = .timeout(busyTimeout)
        config.label = "lnlens.results"
        return config
    }

    /// The schema, one named migration per version. Never edit a shipped migration: add one.
    static let schemaMigrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: Schema.v1)
        }
        return migrator
    }()

    /// Runs `body` in one write transaction, mapping SQLite errors to one-line store errors.
    func write<T>(_ operation: String, _ body: (Database) throws -> T) throws -> T {
        guard let writer else { throw ResultsStoreError.readOnly(path: path) }
        return try mapErrors(operation) { try writer.write(body) }
    }

    /// Runs `body` in a read-only access (a snapshot), mapping SQLite errors.
    func read<T>(_ operation: String, _ body: (Database) throws -> T) throws -> T {
        try mapErrors(operation) { try reader.read(body) }
    }

    private func mapErrors<T>(_ operation: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as DatabaseError {
            if error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED {
                throw ResultsStoreError.sqlite(
                    path: path, operation: operation,
                    message: "the database stayed locked by another process for \(Int(Self.busyTimeout)) s; retry when it is done")
            }
            throw ResultsStoreError.sqlite(path: path, operation: operation, message: error.oneLineMessage)
        } catch let error as ResultsStoreError {
            throw error
        } catch {
            // Row decoding: a value of an unexpected type, e.g. written by hand.
            throw ResultsStoreError.sqlite(path: path, operation: operation, message: "\(error)".oneLine)
        }
    }
}

extension DatabaseError {
    /// SQLite's own message without GRDB's SQL echo, on one line.
    var oneLineMessage: String {
        (message ?? "\(resultCode)").oneLine
    }
}

/// The DDL of each migration, verbatim (docs/schema.md shows the same text).
enum Schema {
    static let v1 = """
        CREATE TABLE runs (
          id              INTEGER PRIMARY KEY AUTOINCREMENT,
          command         TEXT NOT NULL CHECK (command <> ''),
          options_json    TEXT NOT NULL CHECK (json_valid(options_json)),
          model_path      TEXT NOT NULL,
          model_hash      TEXT NOT NULL,
          ln_mode         TEXT NOT NULL CHECK (ln_mode IN ('layernorm', 'ln-free')),
          processing_json TEXT NOT NULL CHECK (json_valid(processing_json)),
          prompt_set_path TEXT NOT NULL,
          prompt_set_hash TEXT NOT NULL,
          n_prompts       INTEGER NOT NULL CHECK (n_prompts >= 0),
          tool_version    TEXT NOT NULL,
          started_at      TEXT NOT NULL,
          ended_at        TEXT,
          status          TEXT NOT NULL DEFAULT 'running'
                          CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
          error           TEXT,
          CHECK ((status = 'running') = (ended_at IS NULL))
        );

        CREATE TABLE run_prompts (
          run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          prompt_index INTEGER NOT NULL CHECK (prompt_index >= 0),
          prompt       TEXT NOT NULL,
          answer       TEXT NOT NULL,
          wrong        TEXT,
          n_tokens     INTEGER NOT NULL CHECK (n_tokens > 0),
          PRIMARY KEY (run_id, prompt_index)
        ) WITHOUT ROWID;

        CREATE TABLE results (
          run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          prompt_index INTEGER NOT NULL CHECK (prompt_index >= 0),
          component    TEXT NOT NULL CHECK (component <> ''),
          quantity     TEXT NOT NULL CHECK (quantity <> ''),
          value        REAL NOT NULL,
          PRIMARY KEY (run_id, prompt_index, component, quantity)
        ) WITHOUT ROWID;

        CREATE TABLE summaries (
          run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          scope  TEXT NOT NULL,
          key    TEXT NOT NULL,
          metric TEXT NOT NULL,
          value  REAL,
          PRIMARY KEY (run_id, scope, key, metric)
        ) WITHOUT ROWID;

        CREATE TABLE batches_done (
          run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          first_prompt INTEGER NOT NULL CHECK (first_prompt >= 0),
          last_prompt  INTEGER NOT NULL CHECK (last_prompt >= first_prompt),
          PRIMARY KEY (run_id, first_prompt, last_prompt)
        ) WITHOUT ROWID;
        """
}
