import Foundation
import GRDB
import Support

/// One cell of a query result, typed as SQLite stored it.
public enum Cell: Sendable, Equatable, Codable, CustomStringConvertible {
    case null
    case int(Int64)
    case double(Double)
    case text(String)
    case blob(Data)

    init(_ value: DatabaseValue) {
        switch value.storage {
        case .null: self = .null
        case .int64(let v): self = .int(v)
        case .double(let v): self = .double(v)
        case .string(let v): self = .text(v)
        case .blob(let v): self = .blob(v)
        }
    }

    /// Text for tables: NULL, integers, shortest round-trip doubles, text as is, blobs as hex.
    public var description: String {
        switch self {
        case .null: "NULL"
        case .int(let v): String(v)
        case .double(let v): String(v)
        case .text(let v): v
        case .blob(let v): "x'" + v.map { String(format: "%02x", $0) }.joined() + "'"
        }
    }

    /// JSON: null, number, string; blobs as base64 strings.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .int(let v): try container.encode(v)
        case .double(let v): try container.encode(v)
        case .text(let v): try container.encode(v)
        case .blob(let v): try container.encode(v.base64EncodedString())
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let v = try? container.decode(Int64.self) {
            self = .int(v)
        } else if let v = try? container.decode(Double.self) {
            self = .double(v)
        } else {
            self = .text(try container.decode(String.self))
        }
    }
}

/// Columns and rows of a read-only query.
public struct QueryResult: Sendable, Equatable, Codable {
    public var columns: [String]
    public var rows: [[Cell]]

    public init(columns: [String], rows: [[Cell]]) {
        self.columns = columns
        self.rows = rows
    }
}

extension ResultsDatabase {
    /// Runs one SQL statement that must not write, and returns its columns and rows. A writing
    /// statement (INSERT, UPDATE, DELETE, CREATE, …) is refused before it runs; the connection
    /// is read-only as well, so SQLite would refuse it too. A statement still running after
    /// `timeout` seconds is interrupted and reported.
    public func query(sql: String, arguments: StatementArguments = StatementArguments(),
                      timeout: TimeInterval? = nil) throws -> QueryResult {
        var result = QueryResult(columns: [], rows: [])
        try query(sql: sql, arguments: arguments, timeout: timeout, columns: { result.columns = $0 }) { result.rows.append($0) }
        return result
    }

    /// `query`, streamed: `columns` once, then `row` for each row as SQLite produces it, so that a
    /// result of any size is printed in constant memory. `timeout` bounds the whole statement,
    /// the time spent in `row` (printing) included.
    public func query(sql: String, arguments: StatementArguments = StatementArguments(), timeout: TimeInterval? = nil,
                      columns: ([String]) throws -> Void, row: ([Cell]) throws -> Void) throws {
        let reader = self.reader
        let timer = timeout.map { seconds in
            let t = DispatchSource.makeTimerSource(queue: .global())
            t.schedule(deadline: .now() + seconds)
            t.setEventHandler { reader.interrupt() }
            t.resume()
            return t
        }
        defer { timer?.cancel() }
        do {
            try reader.read { db in
                let statement: Statement
                do {
                    statement = try db.makeStatement(sql: sql)
                } catch let error as DatabaseError where (error.message ?? "").contains("Multiple statements") {
                    throw ResultsStoreError.querySQL(path: path, message: "one statement only: give a single SELECT (run several queries one by one)")
                }
                if !statement.isReadonly { throw ResultsStoreError.queryWrites(path: path) }
                try statement.setArguments(arguments)
                try columns(statement.columnNames)
                let cursor = try Row.fetchCursor(statement)
                while let r = try cursor.next() {
                    try row((0..<r.count).map { Cell(r[$0] as DatabaseValue) })
                }
            }
        } catch let error as DatabaseError {
            switch error.resultCode {
            case .SQLITE_READONLY: throw ResultsStoreError.queryWrites(path: path)
            case .SQLITE_INTERRUPT: throw ResultsStoreError.queryTimedOut(path: path, seconds: timeout ?? 0)
            case .SQLITE_CORRUPT, .SQLITE_NOTADB: throw ResultsStoreError.damaged(path: path, problem: error.oneLineMessage)
            default: throw ResultsStoreError.querySQL(path: path, message: error.oneLineMessage)
            }
        }
    }

    /// Every run with how much of it is stored: the table `lnlens runs` prints. `prompts` counts
    /// the units `n_prompts` counts: prompts stored (`dla`, `patch`), windows (or prompts) with rows
    /// (`eval`, `sinks`, `norms`, `lens`),
    /// steps logged (`train`, `remove-ln`). `shard` is `I/N` for a shard run, `merged N` for a
    /// run merged from N shards.
    public func runsTable() throws -> QueryResult {
        try query(sql: """
            SELECT r.id, r.command, r.model_path AS model, r.ln_mode,
                   replace(r.prompt_set_path, rtrim(r.prompt_set_path, replace(r.prompt_set_path, '/', '')), '') AS prompt_set,
                   CASE WHEN r.command IN (\(StoreName.unitsInResultsCommands.map { "'\($0)'" }.joined(separator: ", ")))
                        THEN (SELECT COUNT(DISTINCT x.prompt_index) FROM results x WHERE x.run_id = r.id)
                        WHEN r.command IN ('train', 'remove-ln')
                        THEN (SELECT COUNT(*) FROM train_steps t WHERE t.run_id = r.id)
                        ELSE (SELECT COUNT(*) FROM run_prompts p WHERE p.run_id = r.id) END AS prompts,
                   r.n_prompts,
                   CASE WHEN r.shard_count IS NOT NULL THEN r.shard_index || '/' || r.shard_count
                        WHEN EXISTS (SELECT 1 FROM run_shards s WHERE s.run_id = r.id)
                        THEN 'merged ' || (SELECT COUNT(*) FROM run_shards s WHERE s.run_id = r.id) END AS shard,
                   r.status, r.started_at, r.ended_at, r.tool_version
            FROM runs r ORDER BY r.id
            """)
    }
}
