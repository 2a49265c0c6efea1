import Analysis
import Foundation
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
        let options = (try? JSONSerialization.jsonObject(with: Data(run.optionsJSON.utf8))) as? [String: Any]
        command = run.command == "remove-ln" && (options?["keep_ln"] as? Bool) == true ? "remove-ln --keep-ln" : run.command
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
    let ranked: [HeadEffect]

    init(db: ResultsDatabase, run: RunRecord) throws {
        label = RunLabel(run)
        label.task = try TaskNote.check(db: db, run: run)
        let id = run.id!
        struct Key: Hashable, Comparable {
            let prompt: Int, layer: Int, head: Int
            static func < (a: Key, b: Key) -> Bool { (a.prompt, a.layer, a.head) < (b.prompt, b.layer, b.head) }
        }
        var dla: [Key: Double] = [:], de: [Key: Double] = [:]
        for r in try db.results(runID: id, site: Component.head(layer: 0, head: 0).site.name) {
            guard let l = r.layer, let h = r.head else { continue }
            let key = Key(prompt: r.promptIndex, layer: l, head: h)
            if r.quantity == StoreName.dla { dla[key] = r.value } else if r.quantity == StoreName.directEffect { de[key] = r.value }
        }
        let keys = dla.keys.filter { de[$0] != nil }.sorted()
        pairs = keys.map {
            ComponentAttribution(prompt: $0.prompt, component: Component.head(layer: $0.layer, head: $0.head).description,
                                 dla: dla[$0]!, directEffect: de[$0]!)
        }
        layers = (keys.map(\.layer).max() ?? -1) + 1
        heads = (keys.map(\.head).max() ?? -1) + 1
        label.storedPrompts = Set(keys.map(\.prompt)).count
        nmae = NMAESummary(rows: pairs)
        ranked = HeadEffect.ranked(pairs)

        let summaries = try db.summaries(runID: id)
        func stored(_ scope: String, _ key: String) -> ConfidenceInterval? {
            let low = summaries.first { $0.scope == scope && $0.key == key && $0.metric == StoreName.nmaeCILow }?.value
            let high = summaries.first { $0.scope == scope && $0.key == key && $0.metric == StoreName.nmaeCIHigh }?.value
            guard let low, let high else { return nil }
            return ConfidenceInterval(low: low, high: high)
        }
        var fromStore: NMAEIntervals?
        if run.status == .completed, let global = stored(StoreName.scopeHeads, "all") {
            var perLayer: [String: ConfidenceInterval] = [:]
            for key in nmae.perLayer.keys { perLayer[key] = stored(StoreName.scopeLayer, key) }
            if perLayer.count == nmae.perLayer.count {
                fromStore = NMAEIntervals(headsGlobal: global, perLayer: perLayer)
            }
        }
        intervalsStored = fromStore != nil
        let options = (try? JSONSerialization.jsonObject(with: Data(run.optionsJSON.utf8))) as? [String: Any]
        let scheme = (options?["bootstrap"] as? String).flatMap(BootstrapScheme.init(rawValue:)) ?? .crossed
        intervals = fromStore ?? NMAEIntervals(rows: pairs, scheme: scheme)
    }
}

/// A `patch` run read back: per site and quantity the (prompt, layer, position) values, the
/// prompts' tokens, and the estimator errors. Only the sites of `StoreName.positionSites` are
/// read (per-head sites such as `z` are not drawn yet).
struct PatchData {
    struct Cell: Hashable {
        let prompt: Int, layer: Int, position: Int
    }

    var label: RunLabel
    /// site → quantity → value per cell, for the sites of `StoreName.positionSites`.
    let values: [String: [String: [Cell: Double]]]
    /// Column labels `token_i` (from the first prompt's tokens) when every prompt has the same
    /// number of tokens; else nil.
    let tokenLabels: [String]?
    /// Every prompt has the same number of tokens (a shared template): position i means the same
    /// slot in each, so averaging over prompts per position is meaningful.
    let sharedLength: Bool
    let positions: Int
    let layers: Int
    let errors: [ErrorRow]

    /// Quantities in drawing order: activation patching first, then each estimator present.
    static let quantities = [StoreName.activation, StoreName.atp, StoreName.atpStar]

    init(db: ResultsDatabase, run: RunRecord) throws {
        label = RunLabel(run)
        label.task = try TaskNote.check(db: db, run: run)
        let id = run.id!
        var values: [String: [String: [Cell: Double]]] = [:]
        var prompts = Set<Int>()
        for site in StoreName.positionSites {
            for r in try db.results(runID: id, site: site) {
                guard let l = r.layer, let p = r.position, r.head == nil else { continue }
                values[site, default: [:]][r.quantity, default: [:]][Cell(prompt: r.promptIndex, layer: l, position: p)] = r.value
                prompts.insert(r.promptIndex)
            }
        }
        self.values = values
        let cells = values.values.flatMap { $0.values.flatMap(\.keys) }
        layers = (cells.map(\.layer).max() ?? -1) + 1
        positions = (cells.map(\.position).max() ?? -1) + 1
        label.storedPrompts = prompts.count
        let stored = try db.prompts(runID: id).filter { prompts.contains($0.promptIndex) }
        let lengths = Set(stored.map { $0.tokens?.count ?? $0.nTokens })
        sharedLength = lengths.count <= 1
        if lengths.count == 1, let tokens = stored.first?.tokens, tokens.count >= positions {
            tokenLabels = tokens.enumerated().map { "\(Self.visible($0.element))_\($0.offset)" }
        } else {
            tokenLabels = nil
        }
        errors = try db.estimatorErrors(runID: id)
    }

    /// A token as a label: spaces kept, line breaks and tabs shown as `\n`, `\t`.
    static func visible(_ token: String) -> String {
        token.replacingOccurrences(of: "\n", with: "\\n").replacingOccurrences(of: "\t", with: "\\t")
            .replacingOccurrences(of: "\r", with: "\\r")
    }

    /// Layer × position means over prompts of one site and quantity (NaN where nothing is stored).
    func grid(site: String, quantity: String) -> [[Double]]? {
        guard let cells = values[site]?[quantity], !cells.isEmpty else { return nil }
        var sum = [[Double]](repeating: [Double](repeating: 0, count: positions), count: layers)
        var count = [[Int]](repeating: [Int](repeating: 0, count: positions), count: layers)
        // In prompt order: summed in the dictionary's (per-process) order, the means and so the
        // colours differed in the last bits from one `report` to the next.
        for (cell, v) in cells.sorted(by: { ($0.key.prompt, $0.key.layer, $0.key.position) < ($1.key.prompt, $1.key.layer, $1.key.position) }) {
            sum[cell.layer][cell.position] += v
            count[cell.layer][cell.position] += 1
        }
        return (0..<layers).map { l -> [Double] in
            (0..<positions).map { p -> Double in count[l][p] == 0 ? Double.nan : sum[l][p] / Double(count[l][p]) }
        }
    }

    /// Sites with activation-patching rows, in `positionSites` order.
    var sites: [String] { StoreName.positionSites.filter { values[$0]?[StoreName.activation]?.isEmpty == false } }

    /// Estimators with rows at `site`.
    func estimators(site: String) -> [String] {
        Self.quantities.dropFirst().filter { values[site]?[$0]?.isEmpty == false }
    }
}

/// A `train`, `remove-ln` or `eval` run read back: its steps and its `eval` summaries.
struct TrainingData {
    struct Eval {
        let key: String
        let metrics: [String: Double]
    }

    var label: RunLabel
    let steps: [TrainStepRow]
    /// `summaries` rows of scope `eval`, one per key (the model evaluated), in key order.
    let evals: [Eval]

    init(db: ResultsDatabase, run: RunRecord) throws {
        label = RunLabel(run)
        steps = try db.trainSteps(runID: run.id!)
        let rows = try db.summaries(runID: run.id!).filter { $0.scope == StoreName.scopeEval }
        evals = Dictionary(grouping: rows, by: \.key).sorted { $0.key < $1.key }.map { key, rows in
            Eval(key: key, metrics: Dictionary(rows.map { ($0.metric, $0.value) }, uniquingKeysWith: { a, _ in a }))
        }
    }
}
