import Analysis
import ArgumentParser
import Foundation
import GPT2
import Jobs
import ResultsStore
import Support

struct CircuitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "circuit",
        abstract: "Circuits of an edges run and their faithfulness curve (metric recovered against edges kept), stored in SQLite.",
        discussion: """
            For each edges run RUN (one per model) and each method, the circuits its mean scores select: the n edges of \
            largest |score| (--selection top), hannamw/EAP-IG's greedy growth from the logits (greedy), or every edge \
            with |score| ≥ t (threshold); each pruned to the edges on paths from the input to the logits (as \
            evaluate_graph does; --no-prune keeps them all). Each circuit is evaluated on every prompt pair of RUN: the \
            clean run with every edge outside the circuit carrying the corrupted run's activation. Faithfulness = \
            (mean circuit metric − mean corrupt metric) / (mean clean metric − mean corrupt metric), the means over \
            RUN's prompt pairs, the metric logit[answer] − logit[wrong] (docs/patching.md "Circuits"). With two runs, \
            also overlap@k of their circuits' edge sets.
            """)

    @Argument(help: "Edges runs (lnlens edges stores one per --model), e.g. 1 2.") var runs: [Int64]
    @Option(name: [.long, .customLong("top")], help: "Comma-separated circuit sizes in edges (top, greedy; default: 0, 16 log-spaced sizes, all edges).") var sizes: String?
    @Option(help: ArgumentHelp("How each circuit is chosen.", valueName: "top|greedy|threshold")) var selection = "top"
    @Option(help: "Comma-separated |score| thresholds (with --selection threshold).") var thresholds: String?
    @Option(help: "Comma-separated methods among eap, eap-ig, exact (default: every method the edges run stored).") var methods: String?
    @Flag(help: "Evaluate the circuits as selected, without pruning edges off paths from the input to the logits.") var noPrune = false
    @Option(help: "SQLite database holding the edges runs; the circuit runs are stored there too.") var db = "results/lnlens.sqlite"
    @Option(help: "Continue an interrupted circuit run (one RUN, same options).") var resume: Int64?
    @Flag(help: "With --resume: take the run over even if its writer on another host was heard from in the last 2 minutes.")
    var forceResume = false
    @Option(help: "Prompt pairs stored per transaction (the unit an interrupted run resumes from).") var chunkSize = 8
    @Flag(help: "Print the curves (and overlaps) as JSON.") var json = false

    func validate() throws {
        do {
            guard let kind = CircuitSelectionKind(typed: selection) else {
                throw ValidationError("--selection \(selection): give top, greedy or threshold")
            }
            if let methods { _ = try CircuitInput.methods(methods) }
            if let sizes { _ = try CircuitInput.sizes(sizes) }
            if let thresholds { _ = try CircuitInput.thresholds(thresholds) }
            if kind == .threshold, sizes != nil { throw CircuitError.sizesWithThreshold }
            if kind == .threshold, thresholds == nil { throw CircuitError.thresholdSelectionNeedsThresholds }
            if kind != .threshold, thresholds != nil { throw CircuitError.thresholdsNeedThresholdSelection }
        } catch let error as CircuitError {
            throw ValidationError(error.localizedDescription)
        }
        if runs.isEmpty { throw ValidationError("RUN: give the id of an edges run (see lnlens runs)") }
        if resume != nil && runs.count > 1 { throw ValidationError("--resume continues one circuit run: give the one RUN it used") }
        if forceResume && resume == nil { throw ValidationError("--force-resume goes with --resume RUN_ID") }
        if chunkSize < 1 { throw ValidationError("--chunk-size must be at least 1") }
    }

    func run() throws {
        guard FileManager.default.fileExists(atPath: db) else { throw ResultsStoreError.databaseNotFound(path: db) }
        let store = try ResultsDatabase(path: db)
        // Every run read, every model loaded and every circuit chosen before the first run is stored.
        let jobs = try runs.map { try job(for: $0, store: store) }
        var ids: [Int64] = []
        for (label, job) in jobs {
            ids.append(try ProgressLine.run(label: label, unit: "prompt pairs") {
                try job.run(db: store, resume: resume, progress: $0, phase: $1)
            })
        }
        let reports = try ids.map { try CircuitRunReport(db: store, runID: $0) }
        let overlaps = reports.count == 2 ? CircuitOverlap.between(reports[0], reports[1]) : []
        if json { return try printJSON(CircuitOutput(reports: reports, overlaps: overlaps)) }
        for r in reports { r.printCurves() }
        if reports.count == 2 { printOverlaps(overlaps, reports[0], reports[1]) }
        print("stored in \(db) as run\(ids.count > 1 ? "s" : "") \(ids.map(String.init).joined(separator: ", "))"
              + (ids.count == 2 ? "; compare them with: lnlens diff \(ids[0]) \(ids[1]) --db \(db)" : ""))
    }

    /// The job of edges run `id`: its model (checked to be the weights the run used), its prompt
    /// pairs tokenized again, and the circuits of each method.
    func job(for id: Int64, store: ResultsDatabase) throws -> (String, CircuitJob) {
        let report = try EdgeRunReport(db: store, runID: id)
        if report.run.status != .completed { throw CircuitError.notCompleted(runID: id, status: report.run.status.rawValue) }
        if report.prompts == 0 { throw CircuitError.noPrompts(runID: id) }
        let stored = report.methods
        let chosen = try methods.map { try CircuitInput.methods($0) } ?? stored
        if let missing = chosen.first(where: { !stored.contains($0) }) {
            throw CircuitError.methodNotInRun(method: missing, runID: id, stored: stored)
        }
        let processing = (try? JSONDecoder().decode(ProcessingOptions.self, from: Data(report.run.processingJSON.utf8))) ?? .all
        let loaded = try LoadedModel.load(report.run.modelPath, processing: processing)
        guard try loaded.weightsHash() == report.run.modelHash else { throw CircuitError.modelChanged(runID: id, path: report.run.modelPath) }
        let prependBOS = EdgeOptions(json: report.run.optionsJSON).computation.prependBOS ?? true
        let pairs = try CircuitJob.pairs(try store.prompts(runID: id), runID: id, tokenizer: try loaded.requireTokenizer(), prependBOS: prependBOS)
        let graph = loaded.model.edgeGraph, name = ModelPath.shortName(report.run.modelPath)
        let kind = CircuitSelectionKind(typed: selection)!
        let points: [Double]
        if kind == .threshold {
            points = try CircuitInput.thresholds(thresholds!)
        } else {
            let n = try sizes.map { try CircuitInput.sizes($0) } ?? CircuitInput.defaultSizes(edges: graph.edgeCount)
            if let bad = n.first(where: { $0 > graph.edgeCount }) { throw CircuitError.sizeOutOfRange(size: bad, edges: graph.edgeCount, model: name) }
            points = n.map(Double.init)
        }
        let circuits = try CircuitJob.circuits(report, graph: graph, methods: chosen, selection: kind, points: points, prune: !noPrune)
        var options = CircuitOptions()
        (options.computation.edgesRun, options.computation.methods, options.computation.selection) = (Int(id), chosen.joined(separator: ","), kind.rawValue)
        if kind == .threshold { options.computation.thresholds = points.map(CircuitSpec.text).joined(separator: ",") }
        else { options.computation.sizes = points.map(CircuitSpec.text).joined(separator: ",") }
        (options.computation.prune, options.computation.chunkSize, options.record.db) = (!noPrune, chunkSize, db)
        var job = CircuitJob(model: loaded.model, edges: report, pairs: pairs, circuits: circuits, options: options, toolVersion: LNLensVersion.string)
        job.forceResume = forceResume
        return (name, job)
    }

    func printOverlaps(_ overlaps: [CircuitOverlap], _ a: CircuitRunReport, _ b: CircuitRunReport) {
        print("overlap@k of the circuits' edge sets, A: run \(a.run.id!) \(ModelPath.shortName(a.run.modelPath)), "
              + "B: run \(b.run.id!) \(ModelPath.shortName(b.run.modelPath)) (|A ∩ B| / max(|A|, |B|))")
        print("  method  selection   requested   edges A   edges B    shared   overlap")
        for o in overlaps {
            print("  " + padded(o.method, 7) + " " + padded(o.selection, 9) + rightAligned(CircuitSpec.text(o.requested), 12)
                  + rightAligned("\(o.edgesA)", 10) + rightAligned("\(o.edgesB)", 10) + rightAligned("\(o.shared)", 10)
                  + rightAligned(String(format: "%.3f", o.overlap), 10))
        }
        print("")
    }
}

/// `lnlens circuit --json`.
struct CircuitOutput: Encodable {
    struct Run: Encodable {
        let run: Int64, edgesRun: Int64?, model: String, lnMode: String
        let curves: [FaithfulnessRow]
        enum CodingKeys: String, CodingKey { case run, edgesRun = "edges_run", model, lnMode = "ln_mode", curves }
    }
    let runs: [Run]
    let overlaps: [CircuitOverlap]

    init(reports: [CircuitRunReport], overlaps: [CircuitOverlap]) {
        runs = reports.map { Run(run: $0.run.id!, edgesRun: $0.edgesRun, model: $0.run.modelPath, lnMode: $0.run.lnMode, curves: $0.curves) }
        self.overlaps = overlaps
    }
}

extension CircuitRunReport {
    /// One table per (method, selection): requested, edges kept, mean metric, faithfulness.
    func printCurves() {
        let name = ModelPath.shortName(run.modelPath)
        print("\(name) (\(run.lnMode)) — circuit run \(run.id!) of edges run \(edgesRun.map(String.init) ?? "?"), "
              + "\(curves.first?.nPrompts ?? 0) prompt pairs")
        if let task { print("  " + task.line() + (task.passed == false ? " — TASK CHECK FAILED" : "")) }
        if let c = curves.first { print(String(format: "  mean metric: clean %.4f, corrupt %.4f", c.clean, c.corrupt)) }
        for (method, selection) in series {
            print("  \(method), \(selection):   requested     edges      metric   faithfulness")
            for c in curves where c.method == method && c.selection == selection {
                print("  " + String(repeating: " ", count: method.count + selection.count + 3)
                      + rightAligned(CircuitSpec.text(c.requested), 12) + rightAligned("\(c.edges)", 10)
                      + rightAligned(String(format: "%.4f", c.metric), 12) + rightAligned(c.normalized.map { String(format: "%.4f", $0) } ?? "-", 15))
            }
        }
        print("")
    }
}
