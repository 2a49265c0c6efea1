import Analysis
import ArgumentParser
import Foundation
import GPT2
import Jobs
import ResultsStore
import Support

struct PatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "patch",
        abstract: "Activation patching against attribution patching (AtP, AtP*), site by site, stored in SQLite.",
        discussion: """
            Every prompt needs "wrong" and a "corrupt" prompt of the same token length. The metric is the \
            logit difference answer − wrong at the last position. denoise (default) patches the clean \
            activation into the corrupted run: effect = metric(patched) − metric(corrupt); noise patches \
            the corrupted activation into the clean run: effect = metric(patched) − metric(clean). \
            AtP = Σ (donor − patched-run activation) · ∂metric/∂activation on the patched run; AtP* adds \
            the QK fix (q, k sites) and GradDrop and estimates |effect| (docs/patching.md has the formulas). \
            Sites: \(PatchSite.allCases.map(\.rawValue).joined(separator: ", ")).
            """)

    @OptionGroup var pairs: PairRunOptions
    @Option(help: "Comma-separated site kinds.") var sites = "resid_pre,attn_out,mlp_out,z"
    @Option(help: "Comma-separated methods: activation, atp, atp-star.") var methods = "activation,atp"
    @Option(help: ArgumentHelp("denoise (clean into corrupted) or noise (corrupted into clean).", valueName: "direction"))
    var direction = "denoise"
    @Option(help: "Prompt pairs per forward pass.") var batchSize = 16
    @OptionGroup var sharding: ShardOption
    @Option(help: ArgumentHelp("Normalise the printed grids per prompt by activation patching at LAYER,POS (the paper: 0,11) instead of metric(clean) − metric(corrupt).",
                               valueName: "layer,pos"))
    var gridNormalize: String?
    @Option(help: ArgumentHelp("Run both methods on the model linearised around the patched run: attention (patterns fixed), mlp (GELU's tangent), ln (LayerNorm scales fixed), all, or a comma-separated combination.",
                               valueName: "parts"))
    var freeze: String?
    @Flag(help: "Run the model and its variants none, attention, mlp, ln, all, and print AtP's NMAE against activation patching per site and variant.")
    var decompose = false
    @OptionGroup var bound: AtPStarBoundOptions
    @OptionGroup var processing: ProcessingFlags
    @Flag(help: "Print JSON (every row).") var json = false
    @Flag(help: "Print CSV (every row).") var csv = false

    func validate() throws {
        if json && csv { throw ValidationError("--json and --csv exclude each other") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if PatchDirection(rawValue: direction) == nil { throw ValidationError("--direction \(direction): use denoise or noise") }
        _ = try PatchSite.parseList(sites)
        let m = try PatchMethod.parseList(methods)
        if !m.contains(.activation) {
            throw ValidationError("--methods must include activation: the estimators are measured against it")
        }
        if let gridNormalize, parsedGridNormalize == nil {
            throw ValidationError("--grid-normalize \(gridNormalize): give LAYER,POS, e.g. 0,11")
        }
        if gridNormalize != nil, !(try PatchSite.parseList(sites)).contains(.residPre) {
            throw ValidationError("--grid-normalize divides by activation patching at resid_pre: add resid_pre to --sites")
        }
        try validateFreeze(methods: m)
        if bound.atpStarBound {
            if !m.contains(.atpStar) { throw ValidationError("--atp-star-bound bounds what AtP* missed: add atp-star to --methods") }
            if sharding.shard != nil { throw ValidationError("--atp-star-bound needs every prompt in one run: drop --shard") }
            if let site = try PatchSite.parseList(sites).first(where: \.isResidualStream) {
                throw ValidationError("--atp-star-bound: \(PatchSite.boundResidualReason(site))")
            }
        }
    }

    func validateFreeze(methods m: [PatchMethod]) throws {
        if freeze != nil && decompose { throw ValidationError("--freeze and --decompose exclude each other (--decompose runs every variant)") }
        if let freeze, Freeze(name: freeze) == nil {
            throw ValidationError("--freeze \(freeze): use attention, mlp, ln, all or a comma-separated combination, e.g. attention,mlp")
        }
        if (freeze != nil || decompose) && m.contains(.atpStar) {
            throw AnalysisError.freezeWithAtPStar(option: decompose ? "--decompose" : "--freeze")
        }
        if decompose && !m.contains(.atp) { throw ValidationError("--decompose measures AtP's error: --methods must include atp") }
    }

    /// The variants the job runs: the model itself, one linearised variant, or all of `--decompose`.
    var variants: [Freeze] { decompose ? Freeze.decomposition : [freeze.flatMap(Freeze.init(name:)) ?? []] }

    var parsedGridNormalize: GridPoint? { gridNormalize.flatMap(GridPoint.init(storedText:)) }

    var modelSpecs: [String] { pairs.modelSpecs }

    func run() throws {
        let store = LazyDatabase(path: pairs.db)
        let siteList = try PatchSite.parseList(sites), methodList = try PatchMethod.parseList(methods)
        let shard = try sharding.resolved()
        if bound.atpStarBound, shard != nil { throw ValidationError("--atp-star-bound needs every prompt in one run: unset the Slurm array variables or run without --shard") }
        var runIDs: [Int64] = []
        for spec in modelSpecs {
            let loaded = try LoadedModel.load(spec, processing: processing.options)
            let tok = try loaded.requireTokenizer()
            let set = try pairs.promptSet(for: loaded)
            var job = PatchJob(model: loaded.model, modelPath: loaded.checkpoint.directory.path,
                               modelHash: try loaded.weightsHash(), prompts: set,
                               sites: siteList, methods: methodList, direction: PatchDirection(rawValue: direction)!,
                               tokenText: { tok.tokenString($0) }, options: options, toolVersion: LNLensVersion.string)
            (job.shard, job.forceResume, job.variants) = (shard, pairs.forceResume, variants)
            job.bound = bound.settings
            runIDs.append(try ProgressLine.run(label: spec, unit: "prompt pairs") {
                try job.run(db: try store.open(), resume: pairs.resume, progress: $0, phase: $1)
            })
        }
        let reports = try store.readBack(runIDs, label: "patch") { try PatchRunReport(db: $0, runID: $1) }
        for r in reports { if let w = r.task?.warning(model: r.modelName) { printErr("lnlens: warning: " + w) } }
        if json { return try printJSON(["runs": reports]) }
        if csv { return PatchRunReport.printCSV(reports) }
        for r in reports { r.printSummary(gridNormalize: parsedGridNormalize) }
        if reports.count > 1 { PatchRunReport.printSideBySide(reports) }
        if variants.count > 1 { PatchRunReport.printDecomposition(reports) }
        printStored(runIDs, db: pairs.db, shard: nil)
    }

    /// The options stored with each run (the job adds sites, methods and direction).
    var options: PatchOptions {
        var options = PatchOptions()
        (options.record.models, options.record.db, options.record.prompts) = (modelSpecs.joined(separator: ","), pairs.db, pairs.prompts)
        (options.computation.prependBOS, options.computation.skipInvalid) = (pairs.prependBos, pairs.skipInvalid)
        (options.computation.batchSize, options.computation.chunkSize) = (batchSize, pairs.chunkSize)
        (options.computation.minGap, options.record.processing) = (pairs.minGap, processing.stored)
        options.record.gridNormalize = parsedGridNormalize
        return options
    }
}

extension PatchRunReport {
    /// `--csv`: every row of every run.
    static func printCSV(_ reports: [PatchRunReport]) {
        print("run_id,model,model_name,ln_mode,prompt,site,layer,pos,head,activation,atp,atp_star")
        for r in reports {
            for row in r.rows {
                func f(_ v: Double?) -> String { v.map { "\($0)" } ?? "" }
                func i(_ v: Int?) -> String { v.map(String.init) ?? "" }
                print("\(r.runID),\(csvField(r.model)),\(csvField(r.modelName)),\(r.lnMode),\(row.prompt),\(row.site),\(row.layer),\(i(row.pos)),\(i(row.head)),\(f(row.activation)),\(f(row.atp)),\(f(row.atpStar))")
            }
        }
    }
}

extension PatchRunReport {
    func printSummary(gridNormalize: GridPoint?) {
        let n = prompts.count
        let meanClean = prompts.map(\.cleanMetric).reduce(0, +) / Double(max(n, 1))
        let meanCorrupt = prompts.map(\.corruptMetric).reduce(0, +) / Double(max(n, 1))
        print("\(modelName) (\(lnMode)) — run \(runID), \(n) prompt pairs, \(direction)")
        if n == 0 {
            print("  no prompt pairs in this run (an empty shard: fewer valid prompts than shards): nothing to summarise")
            return
        }
        print(String(format: "  logit difference: clean %.4f, corrupt %.4f (means over prompts)", meanClean, meanCorrupt))
        if let task {
            print("  " + task.line() + (task.passed == false ? " — TASK CHECK FAILED" : ""))
        }
        let left = task.map { $0.smallGap.isEmpty ? "" : "; \($0.smallGap.count) prompts below --min-gap left out" } ?? ""
        print("  estimators against activation patching (all layers; raw values; atp_star against |activation|\(left)):")
        let width = max(9, (errors.values.flatMap(\.keys).map(\.count).max() ?? 0) + 1)
        print("    site            " + padded("method", width + 1) + "  NMAE %   pearson  spearman   sign   top10  top5%        n  zeros")
        let siteOrder = PatchSite.allCases.map(\.rawValue)
        for site in errors.keys.sorted(by: { (siteOrder.firstIndex(of: $0) ?? 99) < (siteOrder.firstIndex(of: $1) ?? 99) }) {
            for method in errors[site]!.keys.sorted() {
                let e = errors[site]![method]!
                func v(_ k: String, _ f: String) -> String { (e[k] ?? nil).map { String(format: f, $0) } ?? "      -" }
                func count(_ metric: String) -> String {
                    let value = allErrors.first { $0.site == site && $0.method == method && $0.layer == nil && !$0.normalized && $0.metric == metric }?.value
                    return value.map { String(format: "%7.0f", $0) } ?? "      -"
                }
                print("    " + padded(site, 15) + " " + padded(method, width) + rightAligned(nmaeText(e["nmae"] ?? nil), 9) + " " + v("pearson", "%7.3f") + "  "
                      + v("spearman", "%7.3f") + "  " + v("sign_agreement", "%5.2f") + "  " + v("topk_recall_10", "%5.2f") + "  "
                      + v("topk_recall_5pct", "%5.2f") + "  " + count("n") + "  " + count("n_structural_zeros"))
            }
        }
        printBounds()
        printGrids(gridNormalize: gridNormalize)
        print("")
    }

    /// `--atp-star-bound`: per site kind, the upper confidence bound on |mean effect| of the nodes
    /// AtP* left unverified, beside the largest that activation patching found among them.
    func printBounds() {
        guard let first = bounds.first else { return }
        func f(_ v: Double?) -> String { v.map { String(format: "%10.3g", $0) } ?? "         -" }
        print(String(format: "  AtP* bound on missed effects (%g%% upper confidence; top %d by mean AtP* verified; %d subsets per prompt, p %g, seed %d; prompts of %d tokens):",
                     100 * (first["confidence"] ?? .nan), Int(first["top_k"] ?? 0), Int(first["subsets"] ?? 0), first["inclusion"] ?? .nan,
                     Int(first["seed"] ?? 0), Int(first["n_tokens"] ?? 0)))
        print("    site              nodes  unverified  samples       bound  max |mean activation|: unverified    verified")
        for b in bounds {
            let n = b["n_unverified"] ?? 0
            print("    " + padded(b.site, 15) + String(format: "%8.0f  %10.0f  %7.0f  ", b["n_nodes"] ?? 0, n, b["samples"] ?? 0)
                  + (n == 0 ? "all verified" : f(b.bound)) + "  " + rightAligned(f(b["max_abs_activation_unverified"]), 33)
                  + "  " + f(b["max_abs_activation_verified"]))
        }
    }

    /// Layer × position grids of the position sites: means over prompts of equal length.
    /// Layer × position grids of the position sites (`positionMaps`).
    func printGrids(gridNormalize: GridPoint?) {
        guard let grids = positionMaps(normalize: gridNormalize) else { return }
        let T = grids.length
        if let g = gridNormalize, grids.anchorMissing {
            printErr("lnlens: warning: --grid-normalize \(g.layer),\(g.position): no prompt has resid_pre at layer \(g.layer), "
                     + "position \(g.position) (\(T) tokens, layers from 0); no grid printed")
            return
        }
        if !grids.leftOut.isEmpty {
            print("  grids leave out \(grids.leftOut.count) prompt\(grids.leftOut.count == 1 ? "" : "s") of \(T) tokens below --min-gap \(String(format: "%g", task!.minGap)): "
                  + TaskCheck.list(grids.leftOut, names: 12))
        }
        guard grids.promptsUsed > 0 else {
            print("  no grid: every prompt of \(T) tokens is below --min-gap")
            return
        }
        for map in grids.maps {
            print("  \(map.site), \(map.method), mean over \(grids.promptsUsed) prompts of \(T) tokens, normalised by \(grids.normalizedBy):")
            print("        " + (0..<T).map { String(grids.firstTokens[safe: $0]?.prefix(6) ?? "\($0)").padding(toLength: 7, withPad: " ", startingAt: 0) }.joined())
            for l in map.layers {
                print("    " + padded("L\(l)", 4) + (0..<T).map { p in map.means[l]?[p].map { String(format: "%7.2f", $0) } ?? "      -" }.joined())
            }
        }
    }

    static func printSideBySide(_ reports: [PatchRunReport]) {
        print("side by side: estimator NMAE % against activation patching (all layers, raw values):")
        let sites = Set(reports.flatMap { $0.errors.keys }).sorted()
        let width = max(9, (reports.flatMap { $0.errors.values.flatMap(\.keys) }.map(\.count).max() ?? 0) + 1)
        print("    site            " + padded("method", width) + reports.map { padded("\($0.modelName) (\($0.lnMode))", 28) }.joined())
        for site in sites {
            let methods = Set(reports.flatMap { $0.errors[site]?.keys.map { $0 } ?? [] }).sorted()
            for method in methods {
                let values = reports.map { $0.errors[site]?[method]?["nmae"] ?? nil }
                var line = "    " + padded(site, 15) + " " + padded(method, width)
                for v in values { line += padded(nmaeText(v), 28) }
                if values.count == 2, let a = values[0], let b = values[1] {
                    line += b < a ? "better without LN" : (b > a ? "worse without LN" : "same")
                    if reports.contains(where: { $0.task?.passed == false }) { line += " (not meaningful: a task check failed)" }
                }
                print(line)
            }
        }
    }
}

/// `--atp-star-bound` and its settings (docs/patching.md, "The bound on missed effects").
struct AtPStarBoundOptions: ParsableArguments {
    @Flag(help: "After the run, bound the effect of the nodes AtP* left unverified (Kramár et al. 2024 §4.3): random subsets of them patched together, Welch's t-test per node; needs atp-star in --methods.")
    var atpStarBound = false
    @Option(help: ArgumentHelp("--atp-star-bound: nodes per site kind verified by activation patching (the top K by mean AtP*).", valueName: "K"))
    var boundTop = AtPStarBoundSettings().top
    @Option(help: ArgumentHelp("--atp-star-bound: random subsets patched per prompt and site kind (at least 2).", valueName: "M"))
    var boundSubsets = AtPStarBoundSettings().subsets
    @Option(help: ArgumentHelp("--atp-star-bound: probability of each unverified node joining a subset (0 < P < 1).", valueName: "P"))
    var boundInclusion = AtPStarBoundSettings().inclusion
    @Option(help: ArgumentHelp("--atp-star-bound: confidence of the upper bound (0 < C < 1).", valueName: "C"))
    var boundConfidence = AtPStarBoundSettings().confidence
    @Option(help: ArgumentHelp("--atp-star-bound: seed of the subsets.", valueName: "S"))
    var boundSeed = AtPStarBoundSettings().seed

    func validate() throws {
        let defaults = AtPStarBoundSettings()
        if !atpStarBound && (boundTop != defaults.top || boundSubsets != defaults.subsets || boundInclusion != defaults.inclusion
                             || boundConfidence != defaults.confidence || boundSeed != defaults.seed) {
            throw ValidationError("--bound-top, --bound-subsets, --bound-inclusion, --bound-confidence and --bound-seed set --atp-star-bound: add it")
        }
        if boundTop < 0 { throw ValidationError("--bound-top \(boundTop): give 0 or more nodes to verify") }
        if boundSubsets < 2 { throw ValidationError("--bound-subsets \(boundSubsets): give at least 2 subsets per prompt (Welch's test needs two samples on each side)") }
        if !(boundInclusion > 0 && boundInclusion < 1) { throw ValidationError("--bound-inclusion \(boundInclusion): give a probability strictly between 0 and 1, e.g. 0.5") }
        if !(boundConfidence > 0 && boundConfidence < 1) { throw ValidationError("--bound-confidence \(boundConfidence): give a confidence strictly between 0 and 1, e.g. 0.95") }
    }

    /// The job's settings; nil without `--atp-star-bound`.
    var settings: AtPStarBoundSettings? {
        guard atpStarBound else { return nil }
        var s = AtPStarBoundSettings()
        (s.top, s.subsets, s.inclusion, s.confidence, s.seed) = (boundTop, boundSubsets, boundInclusion, boundConfidence, boundSeed)
        return s
    }
}
