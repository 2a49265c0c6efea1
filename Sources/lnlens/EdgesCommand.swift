import Analysis
import ArgumentParser
import Foundation
import GPT2
import Jobs
import ResultsStore
import Support

struct EdgesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edges",
        abstract: "Edge attribution (EAP, EAP-IG) of every edge of the model's graph, and exact edge patching, stored in SQLite.",
        discussion: """
            The graph is hannamw/EAP-IG's: upstream input, each head's output, each MLP's output; downstream each \
            head's q, k and v input, each MLP's input, the logits. The metric is the logit difference answer − wrong \
            at the last position. EAP scores an edge u → v by (a_u(clean) − a_u(corrupt)) · ∂m/∂(input of v) on the \
            corrupted run; EAP-IG averages that gradient over --ig-steps interpolations of the input embeddings \
            between corrupt and clean; exact patches the clean difference of u into v's input alone (path \
            patching) and measures metric(patched) − metric(corrupt). --exact top-K patches, per prompt, the K \
            edges of that prompt's largest |EAP| (docs/patching.md "Edges").
            """)

    @OptionGroup var pairs: PairRunOptions
    @Option(help: "Comma-separated methods: eap, eap-ig.") var methods = "eap,eap-ig"
    @Option(help: "EAP-IG's interpolation steps.") var igSteps = 5
    @Option(help: ArgumentHelp("Exact edge patching of none, all edges (small graphs), or per prompt the top-K edges by |EAP|.",
                               valueName: "none|all|top-K"))
    var exact = "none"
    @Option(help: "Edges listed in the summary, by |mean score|.") var top = 10
    @OptionGroup var sharding: ShardOption
    @OptionGroup var processing: ProcessingFlags

    func validate() throws {
        do {
            let m = try EdgeMethod.parseList(methods)
            guard let e = ExactEdges(exact) else { throw EdgeError.badExact(exact) }
            if igSteps < 1 { throw EdgeError.badIGSteps(igSteps) }
            if case .top = e, !m.contains(.eap) { throw EdgeError.exactTopNeedsEAP(exact) }
        } catch let error as EdgeError {
            throw ValidationError(error.localizedDescription)
        }
        if top < 0 { throw ValidationError("--top \(top): give a number of edges ≥ 0") }
    }

    func run() throws {
        let store = LazyDatabase(path: pairs.db)
        let methodList = try EdgeMethod.parseList(methods), exactEdges = ExactEdges(exact)!
        let shard = try sharding.resolved()
        // Every model loaded and checked before the first run is stored.
        let loaded = try pairs.modelSpecs.map { spec in
            let m = try LoadedModel.load(spec, processing: processing.options)
            try EdgeJob.check(methods: methodList, igSteps: igSteps, exact: exactEdges, graph: m.model.edgeGraph, model: spec)
            return (spec, m)
        }
        var runIDs: [Int64] = []
        for (spec, model) in loaded {
            let tok = try model.requireTokenizer()
            var job = EdgeJob(model: model.model, modelPath: model.checkpoint.directory.path, modelHash: try model.weightsHash(),
                              prompts: try pairs.promptSet(for: model), methods: methodList, igSteps: igSteps, exact: exactEdges,
                              tokenText: { tok.tokenString($0) }, options: options, toolVersion: LNLensVersion.string)
            (job.shard, job.forceResume) = (shard, pairs.forceResume)
            runIDs.append(try ProgressLine.run(label: spec, unit: "prompt pairs") {
                try job.run(db: try store.open(), resume: pairs.resume, progress: $0, phase: $1)
            })
        }
        let reports = try store.readBack(runIDs, label: "edges") { try EdgeRunReport(db: $0, runID: $1) }
        for r in reports {
            if let w = r.task?.warning(model: ModelPath.shortName(r.run.modelPath)) { printErr("lnlens: warning: " + w) }
            r.printSummary(top: top)
        }
        if shard != nil { return printStored(runIDs, db: pairs.db, shard: shard) }
        let runs = runIDs.map(String.init).joined(separator: ", ")
        print("stored in \(pairs.db) as run\(runIDs.count > 1 ? "s" : "") \(runs); list the top edges with: lnlens query top-edges \(runIDs[0]) --db \(pairs.db)")
    }

    /// The options stored with each run (the job adds methods, ig steps and exact).
    var options: EdgeOptions {
        var o = EdgeOptions()
        (o.record.models, o.record.db, o.record.prompts) = (pairs.modelSpecs.joined(separator: ","), pairs.db, pairs.prompts)
        (o.computation.prependBOS, o.computation.skipInvalid) = (pairs.prependBos, pairs.skipInvalid)
        (o.computation.chunkSize, o.computation.minGap, o.record.processing) = (pairs.chunkSize, pairs.minGap, processing.stored)
        return o
    }
}

extension EdgeRunReport {
    func printSummary(top limit: Int) {
        let options = EdgeOptions(json: run.optionsJSON).computation
        let steps = options.igSteps.map { " (\($0) steps)" } ?? ""
        print("\(ModelPath.shortName(run.modelPath)) (\(run.lnMode)) — run \(run.id!), \(prompts) prompt pairs, \(edges.count) edges; "
              + "methods \(methods.filter { $0 != StoreName.exact }.joined(separator: ", "))\(steps); exact \(options.exact ?? "none")")
        if prompts == 0 {
            print("  no prompt pairs in this run (an empty shard): nothing to summarise\n")
            return
        }
        if let task { print("  " + task.line() + (task.passed == false ? " — TASK CHECK FAILED" : "")) }
        for m in [StoreName.eap, StoreName.eapIG] where methods.contains(m) && methods.contains(StoreName.exact) {
            guard let e = nmae[m] else {
                print("  \(m) against exact: no NMAE, every prompt is below --min-gap \(task.map { String(format: "%g", $0.minGap) } ?? "")")
                continue
            }
            print("  \(m) against exact: NMAE \(nmaeText(e.value)) % over \(e.pairs) (prompt, edge) pairs")
        }
        guard limit > 0, let rank = methods.first else { return print("") }
        print("  top \(min(limit, edges.count)) edges by |mean \(rank)| over prompts:")
        let width = max(12, (edges.map(\.name.count).max() ?? 0) + 2)
        print("    " + padded("edge", width) + methods.map { rightAligned($0, 11) }.joined())
        for e in top(limit, by: rank) {
            print("    " + padded(e.name, width) + methods.map { m in rightAligned(e.means[m].map { String(format: "%.5f", $0) } ?? "-", 11) }.joined())
        }
        print("")
    }
}
