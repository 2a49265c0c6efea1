import Analysis
import ArgumentParser
import Foundation
import Jobs
import ResultsStore
import Support

/// `--db PATH` and the output format switches of the read-only commands.
struct ReadOptions: ParsableArguments {
    @Option(help: "SQLite database to read.") var db = "results/lnlens.sqlite"
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "Print CSV.") var csv = false

    func validate() throws {
        if json && csv { throw ValidationError("--json and --csv exclude each other") }
    }

    func open() throws -> ResultsDatabase { try ResultsDatabase.openReadOnly(path: db) }

    /// Runs `sql` and prints its rows as they come (constant memory, whatever the result's size):
    /// JSON objects or CSV lines one by one; a table aligned on its first 1,000 rows.
    func stream(_ database: ResultsDatabase, sql: String, timeout: TimeInterval?) throws {
        let out = BufferedOutput()
        defer { out.flush() }
        var names: [String] = [], count = 0
        var head: [[Cell]] = [], widths: [Int] = []
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        func tableLine(_ values: [String]) -> String { alignedLine(values, widths) }
        try database.query(sql: sql, timeout: timeout, columns: { columns in
            names = uniqueNames(columns)
            if csv { out.write(columns.map(csvField).joined(separator: ",") + "\n") }
            if json { out.write("[") }
        }) { row in
            if json {
                let object = Dictionary(uniqueKeysWithValues: zip(names, row))
                out.write((count == 0 ? "\n  " : ",\n  ") + String(decoding: try encoder.encode(object), as: UTF8.self))
            } else if csv {
                out.write(row.map { csvField(cellText($0, fullPrecision: true)) }.joined(separator: ",") + "\n")
            } else if head.count < 1000 && widths.isEmpty {
                head.append(row)
            } else {
                if widths.isEmpty { widths = tableWidths(names, head); out.write(tableHeader(names, widths)); head.forEach { out.write(tableLine($0.map { cellText($0) }) + "\n") } }
                out.write(tableLine(row.map { cellText($0) }) + "\n")
            }
            count += 1
        }
        if json { out.write(count == 0 ? "]\n" : "\n]\n") }
        if !json && !csv {
            if widths.isEmpty { printTable(QueryResult(columns: names, rows: head)) }
        }
    }

    func print(_ result: QueryResult) throws {
        if json {
            let objects = result.rows.map { Dictionary(uniqueKeysWithValues: zip(uniqueNames(result.columns), $0)) }
            return try printJSON(objects)
        }
        if csv {
            Swift.print(result.columns.map(csvField).joined(separator: ","))
            for row in result.rows { Swift.print(row.map { csvField(cellText($0, fullPrecision: true)) }.joined(separator: ",")) }
            return
        }
        printTable(result)
    }
}

/// Column names as JSON keys: a name given twice (`SELECT a.id, b.id …`) gets `:2`, `:3` …
func uniqueNames(_ columns: [String]) -> [String] {
    var used = Set<String>()
    return columns.map { name in
        var candidate = name, k = 1
        while used.contains(candidate) { k += 1; candidate = "\(name):\(k)" }
        used.insert(candidate)
        return candidate
    }
}

/// A cell as text: doubles to 6 significant digits for tables, round-trip exact for CSV.
func cellText(_ c: Cell, fullPrecision: Bool = false) -> String {
    switch c {
    case .null: ""
    case .double(let d): fullPrecision ? "\(d)" : String(format: "%.6g", d)
    default: c.description
    }
}

/// A plain aligned table.
func printTable(_ result: QueryResult) {
    let widths = tableWidths(result.columns, result.rows)
    print(tableHeader(result.columns, widths), terminator: "")
    for row in result.rows { print(alignedLine(row.map { cellText($0) }, widths)) }
    if result.rows.isEmpty { print("(no rows)") }
}

/// Column widths (at most 60) that fit the names and `rows`.
func tableWidths(_ columns: [String], _ rows: [[Cell]]) -> [Int] {
    var widths = columns.map(\.count)
    for row in rows { for (i, c) in row.enumerated() where i < widths.count { widths[i] = min(60, max(widths[i], cellText(c).count)) } }
    return widths
}

/// The column names and their underlines, two lines.
func tableHeader(_ columns: [String], _ widths: [Int]) -> String {
    alignedLine(columns, widths) + "\n" + alignedLine(widths.map { String(repeating: "-", count: $0) }, widths) + "\n"
}

/// One table line: each value padded or cut (with …) to its width. Control characters in stored
/// text (a path holding ESC, say) are shown escaped, never sent to the terminal.
func alignedLine(_ values: [String], _ widths: [Int]) -> String {
    zip(values, widths).map { v, w in
        let shown = displaySafe(v)
        let s = shown.count > w ? String(shown.prefix(max(0, w - 1))) + "…" : shown
        return s.padding(toLength: w, withPad: " ", startingAt: 0)
    }.joined(separator: "  ")
}

/// `text` with C0/C1 control characters and DEL written as `\u{1b}`, so that what a database
/// holds cannot move the cursor, recolour or retitle the user's terminal.
func displaySafe(_ text: String) -> String {
    guard text.unicodeScalars.contains(where: isControl) else { return text }
    return text.unicodeScalars.map { isControl($0) ? "\\u{\(String($0.value, radix: 16))}" : String($0) }.joined()
}

private func isControl(_ s: Unicode.Scalar) -> Bool { s.value < 0x20 || (0x7F...0x9F).contains(s.value) }

/// Standard output through a 64 KB buffer (print's line buffering is slow for a million rows).
final class BufferedOutput {
    private var buffer = Data()
    func write(_ text: String) {
        buffer.append(contentsOf: text.utf8)
        if buffer.count >= 1 << 16 { flush() }
    }
    func flush() {
        guard !buffer.isEmpty else { return }
        FileHandle.standardOutput.write(buffer)
        buffer.removeAll(keepingCapacity: true)
    }
}

struct RunsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs", abstract: "List the stored runs (--verify: check the whole database file first).")
    @OptionGroup var read: ReadOptions
    @Flag(help: "Run SQLite's full integrity_check on the database and report any damage.") var verify = false

    func run() throws {
        let db = try read.open()
        if verify {
            if let problems = try db.integrityProblems() {
                throw ResultsStoreError.damaged(path: db.path, problem: "integrity_check: " + problems.prefix(3).joined(separator: "; "))
            }
            printErr("\(db.path): integrity_check ok")
        }
        try read.print(try db.runsTable())
    }
}

/// `lnlens query --sql "SELECT …"`, and the named queries as its subcommands. The options of
/// `query` (`--db`, `--json`, `--csv`) may come before or after a named query's name.
struct QueryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "query",
        abstract: "Read the results database: a named query or --sql \"SELECT …\" (the database is opened read-only).",
        subcommands: [RunsQuery.self, NMAEQuery.self, TopHeadsQuery.self, TopEdgesQuery.self])

    @Option(help: "Any SQL statement that only reads.") var sql: String?
    @Option(help: "Stop a statement that runs longer than this many seconds.") var timeout: Double = 60
    @OptionGroup var read: ReadOptions

    func validate() throws {
        if !(timeout > 0) { throw ValidationError("--timeout \(timeout): give a positive number of seconds") }
    }

    func run() throws {
        guard let sql else {
            throw ValidationError("give a named query (runs, nmae, top-heads RUN_ID, top-edges RUN_ID) or --sql \"SELECT …\"")
        }
        try read.stream(try read.open(), sql: sql, timeout: timeout)
    }

    /// A named query's options: `query`'s own; refused with --sql.
    static func options(_ query: QueryCommand) throws -> ReadOptions {
        if query.sql != nil { throw ValidationError("give a named query or --sql \"SELECT …\", not both") }
        return query.read
    }
}

struct RunsQuery: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs", abstract: "Every run: id, command, model, LN mode, prompts stored / planned, shard, status, times.")
    @ParentCommand var query: QueryCommand

    func run() throws {
        let read = try QueryCommand.options(query)
        try read.print(try read.open().runsTable())
    }
}

struct NMAEQuery: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nmae",
        abstract: "Per dla run: id, model, LN mode, NMAE (%) over all heads from the stored rows, prompts stored, status.")
    @ParentCommand var query: QueryCommand

    func run() throws {
        let read = try QueryCommand.options(query)
        try read.print(try StoredRuns.nmaeTable(db: read.open()))
    }
}

struct TopHeadsQuery: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "top-heads",
        abstract: "Heads of a dla run by mean |direct effect|, with mean DLA, mean DE and NMAE (%).")
    @Argument(help: ArgumentHelp("The dla run.", valueName: "run-id")) var runID: Int64
    @Option(help: "Rows to list.") var limit = 20
    @ParentCommand var query: QueryCommand

    func validate() throws {
        if limit < 1 { throw ValidationError("--limit \(limit): give a positive number of rows") }
    }

    func run() throws {
        let read = try QueryCommand.options(query)
        try read.print(try StoredRuns.topHeads(db: read.open(), runID: runID, limit: limit))
    }
}

struct TopEdgesQuery: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "top-edges",
        abstract: "Edges of an edges run by |mean score| over prompts (of --method), with every method's mean.")
    @Argument(help: ArgumentHelp("The edges run.", valueName: "run-id")) var runID: Int64
    @Option(help: "Rank by this method's mean: eap, eap_ig or exact.") var method = StoreName.eap
    @Option(help: "Rows to list.") var limit = 20
    @ParentCommand var query: QueryCommand

    func validate() throws {
        if limit < 1 { throw ValidationError("--limit \(limit): give a positive number of rows") }
        let known = [StoreName.eap, StoreName.eapIG, StoreName.exact]
        if !known.contains(method.replacingOccurrences(of: "-", with: "_")) {
            throw ValidationError("--method \(method): use \(known.joined(separator: ", "))")
        }
    }

    func run() throws {
        let read = try QueryCommand.options(query)
        let report = try EdgeRunReport(db: read.open(), runID: runID)
        try read.print(report.topTable(limit: limit, by: method.replacingOccurrences(of: "-", with: "_")))
    }
}

struct MigrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Upgrade a results database written by an older lnlens to the current schema (in one transaction).")
    @Option(help: "SQLite database to upgrade.") var db = "results/lnlens.sqlite"

    func run() throws {
        guard FileManager.default.fileExists(atPath: db) else { throw ResultsStoreError.databaseNotFound(path: db) }
        // What this process applied, decided inside the migration's exclusive transaction: of two
        // concurrent migrates, the second finds the schema current.
        let added = try ResultsDatabase(path: db).migrationsApplied
        let current = ResultsDatabase.migrationIdentifiers.last ?? "?"
        print(added.isEmpty ? "\(db): schema is current (\(current)); nothing to do"
              : "\(db): upgraded to \(current) (applied \(added.joined(separator: ", ")))")
    }
}

struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Compare two dla runs, two patch runs or two circuit runs, on the same prompts (e.g. the LN model against its LN-free twin).")

    @Argument(help: "The first run (usually the LayerNorm model).") var runA: Int64
    @Argument(help: "The second run (usually the LN-free model).") var runB: Int64
    @Option(help: "SQLite database to read.") var db = "results/lnlens.sqlite"
    @Option(help: "How many heads to list as moved or flipped.") var top = 8
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        if top < 0 { throw ValidationError("--top \(top): must not be negative") }
    }

    func run() throws {
        let store = try ResultsDatabase.openReadOnly(path: db)
        if let a = try store.run(id: runA), a.command == StoreName.patchCommand { return try patchDiff(store) }
        if let a = try store.run(id: runA), a.command == StoreName.circuitCommand { return try circuitDiff(store) }
        let d = try StoredRuns.dlaDiff(db: store, runA: runA, runB: runB, top: top)
        if json { return try printJSON(d) }
        func name(_ s: DLADiff.Side) -> String { "run \(s.runID) \(ModelPath.shortName(s.modelPath)) (\(s.lnMode))" }
        func pct(_ v: Double?) -> String { rightAligned(nmaeText(v), 9) }
        print("A: \(name(d.a))")
        print("B: \(name(d.b))")
        printTaskChecks(d.taskA, d.taskB)
        print("prompts compared: \(d.promptsCompared) of \(d.nPrompts) (prompt set \(d.promptSetHash.prefix(12)))")
        print("")
        print("NMAE %, DLA vs exact direct effect          A          B")
        print("  heads (all)                       " + pct(d.a.headNMAE) + "  " + pct(d.b.headNMAE))
        for l in d.layers { print(String(format: "  layer %-3d                         ", l.layer) + pct(l.nmaeA) + "  " + pct(l.nmaeB)) }
        print("")
        print("rank correlation (Spearman) of the heads' mean |direct effect|: " + (d.spearman.map { String(format: "%.4f", $0) } ?? "-"))
        func headLine(_ h: DLADiff.Head) -> String {
            "  " + padded(h.component.description, 7)
                + String(format: " |DE| %8.4f → %8.4f   rank %5.1f → %5.1f   DE %9.4f → %9.4f", h.meanAbsDEA, h.meanAbsDEB,
                         h.rankA, h.rankB, h.meanDEA, h.meanDEB)
                + "   NMAE \(pct(h.nmaeA)) → \(pct(h.nmaeB))"
        }
        print("heads whose rank (by mean |direct effect|: 1 = the head that matters most) moved most:")
        for h in d.rankMoves { print(headLine(h)) }
        print(d.signFlips.isEmpty ? "no head's mean direct effect changed sign"
              : "heads whose mean direct effect changed sign (\(d.signFlips.count)):")
        for h in d.signFlips.prefix(top) { print(headLine(h)) }
        if d.signFlips.count > top { print("  … \(d.signFlips.count - top) more (--top, or --json for all)") }
    }

    /// Two patch runs: the estimators' errors side by side, and whether AtP got better in B.
    func patchDiff(_ store: ResultsDatabase) throws {
        let d = try StoredRuns.patchDiff(db: store, runA: runA, runB: runB)
        if json { return try printJSON(d) }
        func name(_ s: PatchDiff.Side) -> String { "run \(s.runID) \(ModelPath.shortName(s.modelPath)) (\(s.lnMode))" }
        print("A: \(name(d.a))")
        print("B: \(name(d.b))")
        printTaskChecks(d.taskA, d.taskB)
        print("estimators against activation patching, all layers (raw | normalised by metric(clean) − metric(corrupt)):")
        print("  site            method     metric              A          B     |        A          B")
        let rows = d.entries.filter { $0.layer == nil && $0.metric != "n" && $0.metric != "n_structural_zeros" }
        let keys = Set(rows.map { "\($0.site)|\($0.method)|\($0.metric)" })
        let order = ErrorMetric.quality.map(\.rawValue)
        for key in keys.sorted(by: { a, b in
            let x = a.split(separator: "|"), y = b.split(separator: "|")
            return (x[0], x[1], order.firstIndex(of: String(x[2])) ?? 9) < (y[0], y[1], order.firstIndex(of: String(y[2])) ?? 9)
        }) {
            let p = key.split(separator: "|").map(String.init)
            func v(_ normalized: Bool) -> (String, String) {
                let e = rows.first { $0.site == p[0] && $0.method == p[1] && $0.metric == p[2] && $0.normalized == normalized }
                func f(_ x: Double?) -> String {
                    p[2] == "nmae" ? rightAligned(nmaeText(x), 9) : x.map { String(format: "%9.3f", $0) } ?? "        -"
                }
                return (f(e?.a), f(e?.b))
            }
            let (ra, rb) = v(false), (na, nb) = v(true)
            print("  " + padded(p[0], 15) + " " + padded(p[1], 9) + " " + padded(p[2], 17) + ra + "  " + rb + "  |  " + na + "  " + nb)
        }
        if rows.contains(where: { StoreName.variant(of: $0.method).variant != "none" }) {
            DecompositionTable.print(sites: Array(Set(rows.map(\.site))), sides: [
                ("A: " + name(d.a), { d.nmae(site: $0, method: $1).0 }), ("B: " + name(d.b), { d.nmae(site: $0, method: $1).1 }),
            ])
        }
        for site in Set(rows.map(\.site)).sorted() {
            let (a, b) = d.nmae(site: site, method: "atp")
            guard let a, let b else {
                print("\(site): AtP NMAE undefined in \(a == nil && b == nil ? "A and B" : a == nil ? "A" : "B") (no prompt at or above --min-gap, or no AtP rows)")
                continue
            }
            let verdict = b < a ? "AtP got more accurate without LayerNorm" : (b > a ? "AtP got less accurate without LayerNorm" : "no change")
            let failed = d.taskA?.passed == false || d.taskB?.passed == false
            print("\(site): AtP NMAE \(nmaeText(a)) % (A) → \(nmaeText(b)) % (B): \(verdict)"
                  + (failed ? " — not a finding: a task check failed" : ""))
        }
    }

    /// Two circuit runs: their curves side by side, point by point, and overlap@k of their circuits.
    func circuitDiff(_ store: ResultsDatabase) throws {
        let a = try CircuitRunReport(db: store, runID: runA), b = try CircuitRunReport(db: store, runID: runB)
        let overlaps = CircuitOverlap.between(a, b)
        if json { return try printJSON(CircuitOutput(reports: [a, b], overlaps: overlaps)) }
        func name(_ r: CircuitRunReport) -> String { "run \(r.run.id!) \(ModelPath.shortName(r.run.modelPath)) (\(r.run.lnMode))" }
        print("A: \(name(a))")
        print("B: \(name(b))")
        printTaskChecks(a.task, b.task)
        print("faithfulness (edges kept) per circuit, and overlap@k = |A ∩ B| / max(|A|, |B|) of their edge sets:")
        print("  method  selection   requested          A (edges)          B (edges)   overlap")
        for c in a.curves {
            guard let d = b.curves.first(where: { $0.method == c.method && $0.selection == c.selection && $0.requested == c.requested }) else { continue }
            func f(_ r: FaithfulnessRow) -> String { (r.normalized.map { String(format: "%.4f", $0) } ?? "-") + " (\(r.edges))" }
            let o = overlaps.first { $0.method == c.method && $0.selection == c.selection && $0.requested == c.requested }
            print("  " + padded(c.method, 7) + " " + padded(c.selection, 9) + rightAligned(CircuitSpec.text(c.requested), 12)
                  + rightAligned(f(c), 19) + rightAligned(f(d), 19) + rightAligned(o.map { String(format: "%.3f", $0.overlap) } ?? "-", 10))
        }
    }

    /// Each side's task check, one line each, and a warning when either side failed it.
    func printTaskChecks(_ a: TaskCheck?, _ b: TaskCheck?) {
        for (side, check) in [("A", a), ("B", b)] {
            guard let check else { print("task check \(side): not measured"); continue }
            print("task check \(side): " + (check.passed == false ? "FAILED (\(check.failures.joined(separator: "; "))); " : "passed; ")
                  + check.summary(names: 8))
        }
        let failed = [("A", a), ("B", b)].filter { $0.1?.passed == false }.map(\.0)
        if !failed.isEmpty {
            let who = failed.count == 2 ? "runs A and B failed their task checks" : "run \(failed[0]) failed its task check"
            printErr("lnlens: warning: \(who): differences between these runs measure noise")
        }
    }
}
