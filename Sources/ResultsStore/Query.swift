import Foundation
import GRDB

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
    /// is read-only as well, so SQLite would refuse it too.
    public func query(sql: String) throws -> QueryResult {
        try query(sql: sql, arguments: StatementArguments())
    }

    func query(sql: String, arguments: StatementArguments) throws -> QueryResult {
        do {
            return try reader.read { db in
                let statement = try db.makeStatement(sql: sql)
                if !statement.isReadonly { throw ResultsStoreError.queryWrites(path: path) }
                try statement.setArguments(arguments)
                let columns = statement.columnNames
                let rows = try Row.fetchAll(statement).map { row in
                    (0..<row.count).map { Cell(row[$0] as DatabaseValue) }
                }
                return QueryResult(columns: columns, rows: rows)
            }
        } catch let error as DatabaseError {
            if error.resultCode == .SQLITE_READONLY { throw ResultsStoreError.queryWrites(path: path) }
            throw ResultsStoreError.querySQL(path: path, message: error.oneLineMessage)
        }
    }

    /// The named queries of `lnlens query NAME`: name → usage and what it shows.
    public static let namedQueries: [String: String] = [
        "runs": "runs — every run: id, command, model, LN mode, prompts stored / planned, status, times",
        "nmae": "nmae — per dla run: id, model, LN mode, global head NMAE (%) recomputed from the stored rows, prompts stored, status",
        "top-heads": "top-heads RUN_ID [--limit N] — heads of a dla run by mean |direct effect|, with mean DLA, mean DE and NMAE (%); default limit 20",
    ]

    /// Runs a named query (see `namedQueries`) with its command-line arguments.
    public func namedQuery(_ name: String, arguments: [String]) throws -> QueryResult {
        guard let usage = Self.namedQueries[name] else {
            throw ResultsStoreError.unknownNamedQuery(name: name, known: Array(Self.namedQueries.keys))
        }
        let usageLine = String(usage.prefix { $0 != "—" }).trimmingCharacters(in: .whitespaces)
        func bad(_ problem: String) -> ResultsStoreError {
            .namedQueryArguments(name: name, problem: problem, usage: usageLine)
        }
        switch name {
        case "runs", "nmae":
            if !arguments.isEmpty { throw bad("takes no arguments, got '\(arguments.joined(separator: " "))'") }
            return try query(sql: name == "runs" ? NamedSQL.runs : NamedSQL.nmae)
        default:  // top-heads
            var runID: Int64?
            var limit = 20
            var rest = arguments[...]
            while let argument = rest.popFirst() {
                if argument == "--limit" || argument.hasPrefix("--limit=") {
                    let text = argument == "--limit" ? rest.popFirst() : String(argument.dropFirst("--limit=".count))
                    guard let text, let value = Int(text), value > 0 else {
                        throw bad("--limit needs a positive integer")
                    }
                    limit = value
                } else if runID == nil, let id = Int64(argument) {
                    runID = id
                } else {
                    throw bad("unexpected argument '\(argument)'")
                }
            }
            guard let runID else { throw bad("RUN_ID is missing") }
            let run = try read("reading run \(runID)") { try Self.runRow($0, id: runID, path: path) }
            if run.command != StoreName.dlaCommand {
                throw bad("run \(runID) is a \(run.command) run; top-heads needs a \(StoreName.dlaCommand) run")
            }
            return try query(sql: NamedSQL.topHeads, arguments: [runID, limit])
        }
    }
}

/// SQL of the named queries (docs/schema.md shows the same queries for Python users).
enum NamedSQL {
    /// Pairs (DLA, DE) of every head and prompt; `?1` filters one run when bound.
    static func headPairs(oneRun: Bool) -> String {
        """
        head_pairs AS (
          SELECT e.run_id, e.prompt_index, e.component,
                 CAST(substr(e.component, 2, instr(e.component, 'H') - 2) AS INTEGER) AS layer,
                 CAST(substr(e.component, instr(e.component, 'H') + 1) AS INTEGER) AS head,
                 d.value AS dla, e.value AS de
          FROM results e
          JOIN results d ON d.run_id = e.run_id AND d.prompt_index = e.prompt_index
                        AND d.component = e.component AND d.quantity = '\(StoreName.dla)'
          WHERE e.quantity = '\(StoreName.directEffect)' AND e.component GLOB 'L[0-9]*H[0-9]*'
                \(oneRun ? "AND e.run_id = ?1" : "")
        )
        """
    }

    static let runs = """
        SELECT r.id, r.command, r.model_path AS model, r.ln_mode,
               (SELECT COUNT(*) FROM run_prompts p WHERE p.run_id = r.id) AS prompts,
               r.n_prompts, r.status, r.started_at, r.ended_at, r.tool_version
        FROM runs r ORDER BY r.id
        """

    static let nmae = """
        WITH \(headPairs(oneRun: false)),
        per_run AS (
          SELECT run_id, 100.0 * SUM(ABS(dla - de)) / NULLIF(SUM(ABS(de)), 0) AS head_nmae
          FROM head_pairs GROUP BY run_id
        )
        SELECT r.id, r.model_path AS model, r.ln_mode, n.head_nmae,
               (SELECT COUNT(*) FROM run_prompts p WHERE p.run_id = r.id) AS prompts, r.status
        FROM runs r LEFT JOIN per_run n ON n.run_id = r.id
        WHERE r.command = '\(StoreName.dlaCommand)'
        ORDER BY r.id
        """

    static let topHeads = """
        WITH \(headPairs(oneRun: true))
        SELECT component, layer, head,
               AVG(ABS(de)) AS mean_abs_de, AVG(dla) AS mean_dla, AVG(de) AS mean_de,
               100.0 * SUM(ABS(dla - de)) / NULLIF(SUM(ABS(de)), 0) AS nmae,
               COUNT(*) AS prompts
        FROM head_pairs
        GROUP BY component
        ORDER BY mean_abs_de DESC, layer, head
        LIMIT ?2
        """
}
