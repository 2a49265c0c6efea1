import Analysis
import Foundation
import Jobs
import ResultsStore
import Support

/// A run as every figure names it: model, LN mode, prompt set, run id (and its state when it
/// did not complete).
struct RunLabel {
    let id: Int64
    let command: String
    let model: String
    let lnMode: String
    let promptSet: String
    let status: RunStatus
    let nPrompts: Int
    /// Prompts with rows stored (may be fewer than `nPrompts` for an unfinished run).
    var storedPrompts: Int?
    /// The run's task check (`TaskNote`), shown beside every figure of the run.
    var task: TaskCheck?

    init(_ run: RunRecord) {
        id = run.id ?? 0
        // The vanilla control is a remove-ln run with nothing removed: say so wherever it is named.
        let keepLN = run.command == StoreName.removeLNCommand && TrainOptions(json: run.optionsJSON).computation.keepLN == true
        command = keepLN ? "remove-ln --keep-ln" : run.command
        model = Self.modelName(run.modelPath)
        lnMode = run.lnMode
        promptSet = URL(fileURLWithPath: run.promptSetPath).lastPathComponent
        status = run.status
        nPrompts = run.nPrompts
    }

    /// The model's name: a Hugging Face cache snapshot (`…/models--ORG--NAME/snapshots/REV`)
    /// as `ORG/NAME`, a folder as its last component.
    static func modelName(_ path: String) -> String { ModelPath.shortName(path) }

    /// `gpt2-tiny · layernorm · ioi.jsonl · run 3`, with the state of an unfinished run.
    var provenance: String {
        var s = "\(model) · \(lnMode) · \(promptSet) · run \(id)"
        if status != .completed {
            s += " · \(status.rawValue)"
            if let storedPrompts { s += " (\(storedPrompts) of \(nPrompts) prompts stored)" }
        }
        if let note = TaskNote.note(task) { s += " · \(note)" }
        return s
    }

    /// `run 3 · gpt2-tiny · layernorm` (and `· task check failed` when it did).
    var short: String { "run \(id) · \(model) · \(lnMode)" + (task?.passed == false ? " · task check failed" : "") }
}

/// A `dla` run's head rows read back: DLA and direct effect per (prompt, head), NMAE per head and
/// layer, and the bootstrap intervals (stored with the run, or computed here for runs stored
/// before they were, or unfinished).
struct DLAData {
    var label: RunLabel
    /// Heads only, in (prompt, layer, head) order.
    let pairs: [ComponentAttribution]
    let layers: Int
    let heads: Int
    let nmae: NMAESummary
    let intervals: NMAEIntervals
    let intervalsStored: Bool
    /// How the intervals resampled (a run of older lnlens with stored intervals: pairs).
    let bootstrap: BootstrapScheme
    let ranked: [HeadEffect]

    init(db: ResultsDatabase, run: RunRecord) throws {
        label = RunLabel(run)
        label.task = try TaskNote.check(db: db, run: run)
        let id = run.id!
        pairs = try StoredRuns.attributions(db: db, runID: id).filter { $0.component.headLayer != nil }
        layers = (pairs.compactMap(\.component.site.layer).max() ?? -1) + 1
        heads = (pairs.compactMap(\.component.site.head).max() ?? -1) + 1
        label.storedPrompts = Set(pairs.map(\.prompt)).count
        nmae = NMAESummary(rows: pairs)
        ranked = HeadEffect.ranked(pairs)
        let fromStore = try run.status == .completed
            ? StoredRuns.storedIntervals(db.summaries(runID: id), layers: nmae.perLayer.keys) : nil
        intervalsStored = fromStore != nil
        let scheme = DLAOptions(json: run.optionsJSON).bootstrap ?? (fromStore != nil ? .pairs : .crossed)
        bootstrap = scheme
        intervals = fromStore ?? NMAEIntervals(rows: pairs, scheme: scheme)
    }
}

/// A `patch` run read back: per site and quantity the (prompt, layer, position or head) values,
/// the prompts grouped into templates, the per-prompt divisor when the run asked for the paper's
/// normalised grid (`--grid-normalize L,P`), and the estimator errors.
struct PatchData {
    /// One stored value's place: `index` is the position at a position site, the head at a head site.
    struct Cell: Hashable {
        let prompt: Int, layer: Int, index: Int
    }

    /// `--grid-normalize L,P`: each prompt's values divided by its activation patching effect at
    /// `resid_pre`, layer L, position P.
    struct Normalization: Equatable {
        let layer: Int, position: Int

        /// From a run's `options_json` (`"grid_normalize": "0,11"`); nil when absent or unreadable.
        init?(optionsJSON: String) {
            guard let point = PatchOptions(json: optionsJSON).record.gridNormalize else { return nil }
            (layer, position) = (point.layer, point.position)
        }

        /// `activation patching at resid_pre L0, position 11`.
        var description: String { "activation patching at resid_pre L\(layer), position \(position)" }
    }

    var label: RunLabel
    /// site → quantity → value per cell, for the position sites and the head sites.
    let values: [String: [String: [Cell: Double]]]
    /// The prompts with rows, grouped so that position k plays one part in each (largest first).
    let templates: [PromptTemplate]
    let layers: Int
    let heads: Int
    let errors: [ErrorRow]
    let normalization: Normalization?
    /// Per prompt, what its values are divided by when normalised: 1 without normalisation;
    /// absent for a prompt whose divisor is 0 or not stored (it is left out of normalised maps).
    let divisors: [Int: Double]
    /// Every prompt with rows, ascending.
    let prompts: [Int]
    /// Prompts left out of normalised maps: divisor 0 or missing, or below the run's --min-gap.
    let withoutDivisor: [Int]

    /// Quantities in drawing order: activation patching first, then each estimator present.
    static let quantities = [StoreName.activation, StoreName.atp, StoreName.atpStar]
    /// Sites patched per (layer, head) over all positions: drawn as layer × head maps.
    static let headSites = PatchSite.allCases.filter { $0.hasHead && !$0.hasPosition }.map(\.rawValue)
    /// Every site the report draws, in drawing order.
    static let drawnSites = StoreName.positionSites + headSites

    init(db: ResultsDatabase, run: RunRecord) throws {
        label = RunLabel(run)
        label.task = try TaskNote.check(db: db, run: run)
        let id = run.id!
        var values: [String: [String: [Cell: Double]]] = [:]
        var prompts = Set<Int>()
        var heads = 0
        for site in Self.drawnSites {
            let perHead = Self.headSites.contains(site)
            for r in try db.results(runID: id, site: site) {
                guard let l = r.layer, let index = perHead ? r.head : r.position,
                      perHead ? r.position == nil : r.head == nil else { continue }
                values[site, default: [:]][r.quantity, default: [:]][Cell(prompt: r.promptIndex, layer: l, index: index)] = r.value
                prompts.insert(r.promptIndex)
                if perHead { heads = max(heads, index + 1) }
            }
        }
        self.values = values
        layers = (values.values.flatMap { $0.values.flatMap { $0.keys.map(\.layer) } }.max() ?? -1) + 1
        self.heads = heads
        label.storedPrompts = prompts.count
        templates = PromptTemplates.group(try db.prompts(runID: id).filter { prompts.contains($0.promptIndex) })
        errors = try db.estimatorErrors(runID: id)
        normalization = Normalization(optionsJSON: run.optionsJSON)
        var divisors: [Int: Double] = [:]
        if let n = normalization {
            // As the printed grid: prompts below the run's --min-gap are left out of normalised maps too.
            let smallGap = Set(label.task?.smallGap ?? [])
            let anchor = values["resid_pre"]?[StoreName.activation] ?? [:]
            for p in prompts where !smallGap.contains(p) {
                if let d = anchor[Cell(prompt: p, layer: n.layer, index: n.position)], d != 0, d.isFinite { divisors[p] = d }
            }
        } else {
            for p in prompts { divisors[p] = 1 }
        }
        self.divisors = divisors
        self.prompts = prompts.sorted()
        withoutDivisor = prompts.filter { divisors[$0] == nil }.sorted()
    }

    /// Mean over `prompts` of each (layer, index) value of one site and quantity, its magnitude
    /// when `absolute`, divided by each prompt's divisor when `normalized` (prompts without one
    /// left out); `width` indices per layer. NaN where no prompt has a value. Summed in prompt
    /// order, so the same rows give the same bits.
    func grid(site: String, quantity: String, prompts: [Int], width: Int, absolute: Bool = false,
              normalized: Bool = false) -> [[Double]] {
        let cells = Dictionary(grouping: values[site]?[quantity] ?? [:], by: { $0.key.prompt })
        let samples = prompts.sorted().flatMap { p in
            (cells[p] ?? []).map { (prompt: p, layer: $0.key.layer, index: $0.key.index, value: $0.value) }
        }
        let means = CellMeans.means(samples, divisor: { normalized ? divisors[$0] : 1 }, absolute: absolute)
        return (0..<layers).map { l in (0..<width).map { means[l]?[$0] ?? .nan } }
    }

    /// Position sites with activation-patching rows, in `positionSites` order.
    var positionSites: [String] { StoreName.positionSites.filter { values[$0]?[StoreName.activation]?.isEmpty == false } }

    /// Head sites (z, q, k, v, pattern) with activation-patching rows.
    var headSites: [String] { Self.headSites.filter { values[$0]?[StoreName.activation]?.isEmpty == false } }

    /// Every drawn site with activation-patching rows.
    var sites: [String] { positionSites + headSites }

    /// Estimators with rows at `site`.
    func estimators(site: String) -> [String] {
        Self.quantities.dropFirst().filter { values[site]?[$0]?.isEmpty == false }
    }

}

/// A `train`, `remove-ln` or `eval` run read back: its steps and its `eval` summaries.
struct TrainingData {
    struct Eval {
        let key: String
        /// The model's LN mode, when the run recorded it (`ln_modes` in its options; a run of one
        /// model: its `ln_mode`).
        let lnMode: String?
        let metrics: [String: Double]
    }

    var label: RunLabel
    let steps: [TrainStepRow]
    /// `summaries` rows of scope `eval`, one per key (the model evaluated), in the order the
    /// command was given the models (`model_path` is them joined by ` | `).
    let evals: [Eval]

    init(db: ResultsDatabase, run: RunRecord) throws {
        label = RunLabel(run)
        steps = try db.trainSteps(runID: run.id!)
        let rows = try db.summaries(runID: run.id!).filter { $0.scope == StoreName.scopeEval }
        let given = run.modelPath.components(separatedBy: " | ")
        let modes = EvalOptions(json: run.optionsJSON).record.lnModes?.components(separatedBy: ",")
        func rank(_ key: String) -> Int { given.firstIndex(of: key) ?? given.count }
        evals = Dictionary(grouping: rows, by: \.key).sorted { (rank($0.key), $0.key) < (rank($1.key), $1.key) }.map { key, rows in
            let i = given.firstIndex(of: key)
            var mode = i.flatMap { i in modes.flatMap { $0.count == given.count ? $0[i] : nil } }
            // Without `ln_modes`, `ln_mode` is the first model's.
            if mode == nil && (i == 0 || given.count == 1) { mode = run.lnMode }
            return Eval(key: key, lnMode: mode, metrics: Dictionary(rows.map { ($0.metric, $0.value) }, uniquingKeysWith: { a, _ in a }))
        }
    }
}
