import Foundation
import GRDB
import Support

/// The lnlens results database: a small value around a GRDB connection with named schema
/// migrations. Writers use a `DatabasePool` (WAL, so readers never block the writer and several
/// processes can share one file); `openReadOnly` gives a connection that cannot write.
public struct ResultsDatabase: Sendable {
    /// The file path, or `:memory:`.
    public let path: String
    let reader: any DatabaseReader
    /// nil when opened read-only.
    let writer: (any DatabaseWriter)?
    /// The migrations this opening applied (in its one exclusive transaction): empty when the
    /// schema was current already, also when another process migrated it a moment before.
    public private(set) var migrationsApplied: [String] = []

    /// Opens (creating it and its parent folder if needed) the database at `path` for writing, in
    /// WAL mode. An existing file must pass SQLite's `quick_check` first (a damaged database is
    /// refused, never written into); then it is migrated to the current schema.
    public init(path: String) throws {
        try Self.checkFilePath(path)
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw ResultsStoreError.cannotOpen(path: path, reason: "it is a folder; give a file name such as results/lnlens.sqlite")
        }
        do {
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        } catch {
            throw ResultsStoreError.cannotOpen(path: path, reason: "cannot create its folder (\(error.localizedDescription))")
        }
        let existed = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int).map { $0 > 0 } ?? false
        if existed, FileManager.default.fileExists(atPath: path + "-journal") {
            // A writer killed inside a rollback-journal transaction (GRDB sets up WAL on a new file
            // in one) left a hot journal: SQLite's own recovery rolls it back on the first read of
            // a read-write connection. A read-only connection cannot, so do that first.
            do {
                try DatabaseQueue(path: path, configuration: Self.configuration(readonly: false)).inDatabase { db in
                    _ = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master")
                }
            } catch let error as DatabaseError {
                throw Self.openError(path: path, error)
            }
        }
        if existed {
            // Checked over a read-only connection: opening a pool already writes (GRDB creates and
            // drops a table to set up WAL), and nothing may be written into a damaged file.
            do {
                try Self.checkIntact(DatabaseQueue(path: path, configuration: Self.configuration(readonly: true)),
                                     path: path, full: false)
            } catch let error as DatabaseError {
                throw Self.openError(path: path, error)
            }
        }
        // Setting up WAL on a new file takes locks that SQLite does not wait for (no busy handler
        // there): when processes start together, retry until the busy timeout.
        let deadline = Date().addingTimeInterval(Self.busyTimeout)
        while true {
            do {
                let pool = try DatabasePool(path: path, configuration: Self.configuration(readonly: false))
                try self.init(path: path, writer: pool)
                return
            } catch let error as DatabaseError where [.SQLITE_BUSY, .SQLITE_LOCKED].contains(error.resultCode) && Date() < deadline {
                Thread.sleep(forTimeInterval: Double.random(in: 0.01...0.05))
            } catch let error as DatabaseError {
                throw Self.openError(path: path, error)
            } catch let error as ResultsStoreError {
                if case .cannotOpen(_, let reason) = error, reason.contains("locked"), Date() < deadline {
                    Thread.sleep(forTimeInterval: Double.random(in: 0.01...0.05))
                    continue
                }
                throw error
            }
        }
    }

    /// An empty, migrated database in memory (tests).
    public static func inMemory() throws -> ResultsDatabase {
        let queue = try DatabaseQueue(configuration: configuration(readonly: false))
        return try ResultsDatabase(path: ":memory:", writer: queue)
    }

    /// Opens an existing database for reading only (`runs`, `query`, `diff`, `report`). A missing
    /// file is an error naming it; it is never created. A database that another process is
    /// creating right now is waited for (up to the busy timeout) unless `waitForWriter` is false
    /// (the fuzz target: a file no process writes).
    public static func openReadOnly(path: String, waitForWriter: Bool = true) throws -> ResultsDatabase {
        try checkFilePath(path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw ResultsStoreError.databaseNotFound(path: path)
        }
        let started = Date(), deadline = started.addingTimeInterval(busyTimeout)
        while true {
            let queue: DatabaseQueue
            let state: SchemaState
            do {
                queue = try DatabaseQueue(path: readOnlyLocation(path), configuration: configuration(readonly: true))
                state = try queue.read(schemaState)
            } catch let error as DatabaseError {
                if FileManager.default.fileExists(atPath: path + "-journal") {
                    // A rollback journal: either a writer is inside its first transaction (switching
                    // a new file to WAL; the journal goes in a moment), or one was killed there and
                    // left a hot journal, which only a read-write connection rolls back.
                    if waitForWriter, Date().timeIntervalSince(started) < 2 {
                        Thread.sleep(forTimeInterval: 0.05)
                        continue
                    }
                    throw ResultsStoreError.cannotOpen(
                        path: path, reason: "a killed lnlens left an unfinished transaction in \(path)-journal; "
                            + "recover it with `lnlens migrate --db \(path)`, then read again")
                }
                throw openError(path: path, error)
            }
            switch state {
            case .current: return ResultsDatabase(path: path, reader: queue, writer: nil)
            case .newer: throw ResultsStoreError.newerSchema(path: path)
            case .older(let applied): throw ResultsStoreError.olderSchema(path: path, version: applied.last ?? "none")
            case .foreign: throw ResultsStoreError.schemaNotCurrent(path: path)
            case .empty:
                // Being created by a writer that has not committed its schema yet; a file still
                // empty after 2 s is one whose writer died creating it.
                let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
                guard waitForWriter, Date() < deadline, size > 0 || Date().timeIntervalSince(started) < 2 else {
                    throw ResultsStoreError.schemaNotCurrent(path: path)
                }
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
    }

    /// Where a reader opens `path`: the file itself, or — when this process may not write the file
    /// or its folder and no writer is at work (no `-wal` or `-journal` beside it) — SQLite's URI
    /// with `immutable=1`, which reads a WAL database without creating its `-shm` file (a read-only
    /// connection would have to, and fail with "attempt to write a readonly database").
    static func readOnlyLocation(_ path: String) -> String {
        let fm = FileManager.default
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        guard access(path, W_OK) != 0 || access(folder, W_OK) != 0,
              !fm.fileExists(atPath: path + "-wal"), !fm.fileExists(atPath: path + "-journal") else { return path }
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "?#%")
        let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
        return "file:" + (absolute.addingPercentEncoding(withAllowedCharacters: allowed) ?? absolute) + "?immutable=1"
    }

    /// Results live in a file: an empty path, `:memory:` or a SQLite URI (`file:…`) is refused
    /// (SQLite would make a temporary or in-memory database whose results vanish at exit, or a
    /// folder named `file:`).
    static func checkFilePath(_ path: String) throws {
        if path.isEmpty || path == ":memory:" || path.hasPrefix("file:") {
            throw ResultsStoreError.cannotOpen(path: path.isEmpty ? "''" : path,
                                               reason: "lnlens keeps results in a database file, not in memory or a URI")
        }
    }

    private init(path: String, writer: any DatabaseWriter) throws {
        self.path = path
        self.reader = writer
        self.writer = writer
        do {
            migrationsApplied = try writer.writeWithoutTransaction { db in try Self.migrate(db, path: path) }
        } catch let error as DatabaseError {
            throw Self.openError(path: path, error)
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

    // MARK: Schema versions

    /// The migrations, in order. Never edit a shipped migration: add one.
    static let migrations: [(identifier: String, sql: String)] = [("v1", Schema.v1), ("v2", Schema.v2), ("v3", Schema.v3), ("v4", Schema.v4), ("v5", Schema.v5)]

    enum SchemaState: Equatable {
        case empty, current, older([String]), newer, foreign
    }

    /// What the database holds: nothing yet, the current schema, an older or newer lnlens schema,
    /// or another program's tables. Migration records live in `grdb_migrations` (the table GRDB's
    /// migrator used for v1, kept so that every lnlens database reads the same).
    static func schemaState(_ db: Database) throws -> SchemaState {
        guard try db.tableExists("grdb_migrations") else {
            let tables = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")!
            return tables == 0 ? .empty : .foreign
        }
        let applied = try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations")
        let known = migrations.map(\.identifier)
        if applied.contains(where: { !known.contains($0) }) { return .newer }
        let done = known.filter(applied.contains)
        if done == known { return .current }
        if done.isEmpty { return .foreign }
        return .older(done)
    }

    /// The migrations an existing database has had (read-only; empty for a new or foreign file).
    public static func appliedMigrations(path: String) throws -> [String] {
        let queue = try DatabaseQueue(path: path, configuration: configuration(readonly: true))
        return try queue.read { db in
            try db.tableExists("grdb_migrations") ? try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations") : []
        }
    }

    /// Every migration, in order (`v1`, `v2`, …).
    public static var migrationIdentifiers: [String] { migrations.map(\.identifier) }

    /// Creates or upgrades the schema in one exclusive transaction: concurrent first opens of a new
    /// file wait for each other (busy timeout) instead of racing to create the same tables, and a
    /// reader never sees half a schema.
    @discardableResult
    static func migrate(_ db: Database, path: String) throws -> [String] {
        var appliedNow: [String] = []
        try db.inTransaction(.exclusive) {
            switch try schemaState(db) {
            case .current: return .commit
            case .newer: throw ResultsStoreError.newerSchema(path: path)
            case .foreign: throw ResultsStoreError.notLNLensDatabase(path: path)
            case .empty, .older: break
            }
            try db.execute(sql: "CREATE TABLE IF NOT EXISTS grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY)")
            let applied = Set(try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations"))
            for migration in migrations where !applied.contains(migration.identifier) {
                try db.execute(sql: migration.sql)
                try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES (?)", arguments: [migration.identifier])
                appliedNow.append(migration.identifier)
            }
            if let problem = try String.fetchAll(db, sql: "PRAGMA foreign_key_check").first {
                throw ResultsStoreError.damaged(path: path, problem: "foreign key check after migration: \(problem)")
            }
            return .commit
        }
        return appliedNow
    }

    // MARK: Integrity

    /// SQLite's `quick_check` (or the full `integrity_check`): throws `damaged` naming the first
    /// problem and how to recover what is readable.
    static func checkIntact(_ reader: any DatabaseReader, path: String, full: Bool) throws {
        let problems: [String]
        do {
            problems = try reader.read { db in
                try String.fetchAll(db, sql: full ? "PRAGMA integrity_check(20)" : "PRAGMA quick_check(20)")
            }
        } catch let error as DatabaseError {
            throw openError(path: path, error)
        }
        if problems != ["ok"] {
            throw ResultsStoreError.damaged(path: path, problem: problems.first ?? "no answer from the check")
        }
    }

    /// The full `PRAGMA integrity_check` (`lnlens runs --verify`): nil when the database is intact,
    /// else the problems SQLite lists (at most 20).
    public func integrityProblems() throws -> [String]? {
        do {
            let problems = try reader.read { db in try String.fetchAll(db, sql: "PRAGMA integrity_check(20)") }
            return problems == ["ok"] ? nil : problems
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CORRUPT {
            return [error.oneLineMessage]
        } catch let error as DatabaseError {
            throw ResultsStoreError.sqlite(path: path, operation: "checking integrity", message: error.oneLineMessage)
        }
    }

    /// A SQLite error while opening, as one line; corruption gets the recovery hint.
    static func openError(path: String, _ error: DatabaseError) -> ResultsStoreError {
        switch error.resultCode {
        case .SQLITE_CORRUPT: .damaged(path: path, problem: error.oneLineMessage)
        default: .cannotOpen(path: path, reason: error.oneLineMessage)
        }
    }

    // MARK: Access

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
            switch error.resultCode {
            case .SQLITE_BUSY, .SQLITE_LOCKED:
                throw ResultsStoreError.sqlite(
                    path: path, operation: operation,
                    message: "the database stayed locked by another process for \(Int(Self.busyTimeout)) s; retry when it is done")
            case .SQLITE_CORRUPT:
                throw ResultsStoreError.damaged(path: path, problem: error.oneLineMessage)
            default:
                throw ResultsStoreError.sqlite(path: path, operation: operation, message: error.oneLineMessage)
            }
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
