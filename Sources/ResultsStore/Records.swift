import Foundation
import GRDB
import Support

/// Lifecycle of a run. A run found `running` by a later process may still be written by its
/// owner; `claimRun` tells the two cases apart.
public enum RunStatus: String, Codable, Sendable, CaseIterable {
    case running, completed, failed, interrupted
}

/// Names the commands and the store agree on. `results.quantity`, `summaries.scope` etc. are
/// free text in the schema so that later analyses can add their own.
public enum StoreName {
    /// `runs.command` values.
    public static let dlaCommand = "dla", patchCommand = "patch", trainCommand = "train", evalCommand = "eval"
    public static let removeLNCommand = "remove-ln"
    /// `runs.ln_mode` values (a CHECK constraint allows exactly these).
    public static let lnModes = ["layernorm", "ln-free"]
    /// `results.quantity` of `dla` runs.
    public static let dla = "dla", directEffect = "direct_effect", componentsSumError = "components_sum_error"
    /// `summaries.scope`: global over all heads (key `all`), one head (key `L0H0`), one layer's
    /// heads (key `L3`), an internal check (key e.g. `components_sum`).
    public static let scopeHeads = "heads", scopeHead = "head", scopeLayer = "layer", scopeCheck = "check"
    /// `summaries.metric`: NMAE in percent.
    public static let nmae = "nmae"
    /// `summaries.metric` of `dla` runs (scopes `heads`/`all`, `layer` and `head`): the bounds of
    /// the bootstrap 95% confidence interval of that NMAE (1,000 resamples; heads and prompts
    /// resampled independently, or (prompt, head) pairs with `--bootstrap pairs`).
    public static let nmaeCILow = "nmae_ci_low", nmaeCIHigh = "nmae_ci_high"
    /// `summaries` scope `check`, key `stored`: how many `results` and `run_prompts` rows a run
    /// held when it completed (metrics `results`, `prompts`), so that a reader or `merge` can tell
    /// a file that lost rows since (damage, hand edits) from an intact one.
    public static let storedCounts = "stored", storedResults = "results", storedPrompts = "prompts"
    /// `results.site` of the per-prompt task metric rows of `dla` (prompt sets with `wrong`) and
    /// `patch` runs, layer, position and head NULL. Quantities: `clean` and `corrupt`, the logit
    /// difference answer − wrong at the last position of the unpatched clean and corrupted runs;
    /// `first_diff` (`patch`), the first position where the two prompts' tokens differ.
    public static let metricSite = "metric", clean = "clean", corrupt = "corrupt", firstDiff = "first_diff"
}

/// Names of patching, training and evaluation rows as `lnlens report` reads them.
extension StoreName {
    /// Patching sites keyed by (layer, position): `results.site` of `patch` runs drawn as maps.
    public static let positionSites = ["resid_pre", "resid_mid", "attn_out", "mlp_out"]
    /// `results.quantity` of `patch` runs: activation patching's effect on the metric, and the
    /// estimates of attribution patching and AtP*.
    public static let activation = "activation", atp = "atp", atpStar = "atp_star"
    /// The quantity of a method on a linearised variant of the model (`patch --freeze`,
    /// `--decompose`): `atp@freeze=attention`, `activation@freeze=attention,mlp`; the model itself
    /// (variant `none`) keeps the plain name.
    public static func frozen(_ quantity: String, variant: String) -> String {
        variant == "none" ? quantity : quantity + freezeMark + variant
    }
    /// A quantity's method and variant (`none` for a plain name).
    public static func variant(of quantity: String) -> (method: String, variant: String) {
        guard let r = quantity.range(of: freezeMark) else { return (quantity, "none") }
        return (String(quantity[..<r.lowerBound]), String(quantity[r.upperBound...]))
    }
    static let freezeMark = "@freeze="
    /// `summaries.scope` of `eval` runs, key the model evaluated: metrics `loss` (mean next-token
    /// cross-entropy) and the bounds `ci_low`, `ci_high` of its 95% confidence interval; `ln_free`
    /// that model's LN mode (1: `ln-free`, 0: `layernorm`; `runs.ln_mode` holds the first model's).
    public static let scopeEval = "eval", loss = "loss", ciLow = "ci_low", ciHigh = "ci_high", lnFree = "ln_free"
}

/// Names of the rows of the one-pass analyses (`sinks`, `norms`, `lens`; docs/analyses.md).
extension StoreName {
    public static let sinksCommand = "sinks", normsCommand = "norms", lensCommand = "lens"
    /// Commands whose units (text windows or prompts) are counted from their result rows.
    public static let unitsInResultsCommands = [evalCommand, sinksCommand, normsCommand, lensCommand, compareCommand]
    /// `results.site` `input`, quantity `tokens`: each unit's length, one row per unit.
    public static let inputSite = "input", tokens = "tokens"
    /// `sinks`: site `pattern` (layer, head), quantity and summary scope `sink_rate`.
    public static let patternSite = "pattern", sinkRate = "sink_rate"
    /// `norms`: the measures (quantities and summary scopes).
    public static let norm = "norm", normRatio = "norm_ratio", cosine = "cosine"
    /// `lens`: quantities, and the summary scope.
    public static let prob = "prob", rank = "rank", top1 = "top1", kl = "kl", scopeLens = "lens"
    /// `compare`: sites `m0` (the original), `m1`, …; quantities and summary scopes `ce`,
    /// `entropy`, `jsd`, `kl` (KL(original ‖ model)); quantities `max_prob`, `correct` and their
    /// summary scope `ece`; site `input`, quantity `eot` (docs/analyses.md).
    public static let compareCommand = "compare", ce = "ce", entropy = "entropy", jsd = "jsd", eot = "eot"
    public static let maxProb = "max_prob", correct = "correct", ece = "ece"
}

/// Names of the rows of `lnlens neurons` (entropy neurons; docs/analyses.md).
extension StoreName {
    public static let neuronsCommand = "neurons"

    public enum Neurons {
        /// Sites: an ablation of one neuron, a cumulative ablation, the last layer's neurons'
        /// weights (position = the neuron), W_U's singular directions (position = the index).
        public static let neuronSite = "neuron", cumulativeSite = "cumulative", wOutSite = "w_out", svdSite = "w_u_svd"
        /// Ablation quantities: the means and standard deviations over scored tokens, the neuron,
        /// the number ablated, the neuron's mean activation, the per-token |Δ| prefixes.
        public static let loss = "loss", lossSD = "loss_sd", entropy = "entropy", entropySD = "entropy_sd"
        public static let neuron = "neuron", k = "k", meanActivation = "mean_activation"
        public static let lossEffect = "loss_effect", entropyEffect = "entropy_effect"
        /// Weight quantities.
        public static let norm = "norm", logitVar = "logit_var", ratio = "ratio", nullFraction = "null_fraction", rank = "rank"
        public static let singularValue = "singular_value", topCosine = "top_cosine", nullDims = "null_dims"
        /// Summary scopes.
        public static let scopeNeurons = "neurons", scopeCumulative = "cumulative", scopeSVD = "svd"
    }
}

/// One row of `runs`: what a run is (command, options, model, inputs, version), its state, and
/// which process writes it. `id` is nil until the run is recorded.
public struct RunRecord: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "runs"
    /// Every date column through `StoredDate` (the requirement GRDB reads is this function; a
    /// static property of the same name would be ignored and leave GRDB's trapping parser in place).
    public static func databaseDateDecodingStrategy(for column: String) -> DatabaseDateDecodingStrategy {
        .custom(StoredDate.decode)
    }

    public var id: Int64?
    public var command: String
    /// Every option of the command, as a JSON object.
    public var optionsJSON: String
    public var modelPath: String
    /// Content hash of the weights.
    public var modelHash: String
    /// `layernorm` or `ln-free`.
    public var lnMode: String
    /// Weight-processing flags, as a JSON object.
    public var processingJSON: String
    /// The prompt set, text or corpus the run reads.
    public var promptSetPath: String
    public var promptSetHash: String
    /// Prompts (or positions, windows, steps) the run covers: indices `0 ..< nPrompts`.
    public var nPrompts: Int
    public var toolVersion: String
    public var startedAt: Date
    /// NULL while running.
    public var endedAt: Date?
    public var status: RunStatus
    public var error: String?
    /// The process that writes (or last wrote) the run.
    public var ownerHost: String?
    public var ownerPID: Int?
    public var ownerStart: String?
    /// When the owner last showed it was alive (it refreshes this while it works).
    public var heartbeatAt: Date?
    /// `--shard I/N`: this run covers the prompts whose index ≡ I (mod N). nil when unsharded.
    public var shardIndex: Int?
    public var shardCount: Int?

    enum CodingKeys: String, CodingKey {
        case id, command, optionsJSON = "options_json", modelPath = "model_path", modelHash = "model_hash"
        case lnMode = "ln_mode", processingJSON = "processing_json", promptSetPath = "prompt_set_path"
        case promptSetHash = "prompt_set_hash", nPrompts = "n_prompts", toolVersion = "tool_version"
        case startedAt = "started_at", endedAt = "ended_at", status, error
        case ownerHost = "owner_host", ownerPID = "owner_pid", ownerStart = "owner_start", heartbeatAt = "heartbeat_at"
        case shardIndex = "shard_index", shardCount = "shard_count"
    }

    /// A new run, `running`, started now; `beginRun` records it.
    public init(
        command: String, optionsJSON: String, modelPath: String, modelHash: String, lnMode: String,
        processingJSON: String, promptSetPath: String, promptSetHash: String, nPrompts: Int,
        toolVersion: String, shard: (index: Int, count: Int)? = nil, startedAt: Date = Date()
    ) {
        self.command = command
        self.optionsJSON = optionsJSON
        self.modelPath = modelPath
        self.modelHash = modelHash
        self.lnMode = lnMode
        self.processingJSON = processingJSON
        self.promptSetPath = promptSetPath
        self.promptSetHash = promptSetHash
        self.nPrompts = nPrompts
        self.toolVersion = toolVersion
        self.startedAt = startedAt
        self.status = .running
        self.shardIndex = shard?.index
        self.shardCount = shard?.count
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }

    /// The writing process, when recorded.
    public var owner: ProcessIdentity? {
        guard let ownerHost, let ownerPID else { return nil }
        return ProcessIdentity(host: ownerHost, pid: ownerPID, start: ownerStart ?? "")
    }

    /// `I/N` for a sharded run.
    public var shardLabel: String? {
        guard let shardIndex, let shardCount else { return nil }
        return "\(shardIndex)/\(shardCount)"
    }
}

/// One row of `run_prompts` (the run id is implied by the call).
public struct PromptRow: Codable, Sendable, Equatable {
    /// 0-based position of the prompt in the run, `0 ..< runs.n_prompts`.
    public var promptIndex: Int
    public var prompt: String
    public var answer: String
    public var wrong: String?
    public var nTokens: Int
    /// The corrupted prompt of a patching run.
    public var corrupt: String?
    /// The prompt's tokens as text, one string per position (patching maps label columns with them).
    public var tokens: [String]?

    public init(promptIndex: Int, prompt: String, answer: String, wrong: String?, nTokens: Int,
                corrupt: String? = nil, tokens: [String]? = nil) {
        self.promptIndex = promptIndex
        self.prompt = prompt
        self.answer = answer
        self.wrong = wrong
        self.nTokens = nTokens
        self.corrupt = corrupt
        self.tokens = tokens
    }
}

/// One row of `results`: one number per (prompt, site, layer, position, head, quantity). `layer`,
/// `position` and `head` are nil where the site has none (`embed` has no layer; a `resid_pre`
/// patch has no head; an all-positions head patch has no position).
public struct ResultRow: Codable, Sendable, Equatable, Hashable {
    public var promptIndex: Int
    /// A DLA component's site (`embed`, `pos_embed`, `result`, `b_O`, `mlp_out`) or a patching
    /// site (`resid_pre`, `z`, …).
    public var site: String
    public var layer: Int?
    public var position: Int?
    public var head: Int?
    /// e.g. `dla`, `direct_effect`, `activation`, `atp`.
    public var quantity: String
    public var value: Double

    public init(promptIndex: Int, site: String, layer: Int? = nil, position: Int? = nil, head: Int? = nil,
                quantity: String, value: Double) {
        self.promptIndex = promptIndex
        self.site = site
        self.layer = layer
        self.position = position
        self.head = head
        self.quantity = quantity
        self.value = value
    }
}

/// One row of `summaries`. A NaN value (e.g. NMAE when every DE is 0) is stored as NULL and
/// read back as NaN.
public struct SummaryRow: Codable, Sendable, Equatable {
    public var scope: String
    public var key: String
    public var metric: String
    public var value: Double

    public init(scope: String, key: String, metric: String, value: Double) {
        self.scope = scope
        self.key = key
        self.metric = metric
        self.value = value
    }

    public static func == (a: SummaryRow, b: SummaryRow) -> Bool {
        a.scope == b.scope && a.key == b.key && a.metric == b.metric
            && (a.value == b.value || (a.value.isNaN && b.value.isNaN))
    }
}

/// One row of `estimator_errors`: how far an estimator (`atp`, `atp_star`) is from activation
/// patching at one site kind, over one layer (`layer` nil: all layers), on raw or normalised values.
public struct ErrorRow: Codable, Sendable, Equatable {
    public var site: String
    public var method: String
    public var layer: Int?
    public var normalized: Bool
    /// `nmae`, `pearson`, `spearman`, `sign_agreement`, `topk_recall_10`, `topk_recall_5pct`, `n`.
    public var metric: String
    /// NaN when undefined (stored as NULL).
    public var value: Double

    public init(site: String, method: String, layer: Int?, normalized: Bool, metric: String, value: Double) {
        self.site = site
        self.method = method
        self.layer = layer
        self.normalized = normalized
        self.metric = metric
        self.value = value
    }

    public static func == (a: ErrorRow, b: ErrorRow) -> Bool {
        a.site == b.site && a.method == b.method && a.layer == b.layer && a.normalized == b.normalized
            && a.metric == b.metric && (a.value == b.value || (a.value.isNaN && b.value.isNaN))
    }
}

/// One optimizer step of a `train` or `remove-ln` run.
public struct TrainStepRow: Codable, Sendable, Equatable {
    public var step: Int
    public var loss: Double
    /// The auxiliary loss of LayerNorm removal, when used.
    public var auxLoss: Double?
    public var lr: Double
    public var gradNorm: Double?
    /// Tokens seen so far, this step included.
    public var tokens: Int
    /// Wall time of the step.
    public var seconds: Double?
    /// What happened at this step, e.g. `ln_2 of blocks 0 removed`.
    public var event: String?

    public init(step: Int, loss: Double, auxLoss: Double? = nil, lr: Double, gradNorm: Double? = nil, tokens: Int,
                seconds: Double? = nil, event: String? = nil) {
        self.step = step
        self.loss = loss
        self.auxLoss = auxLoss
        self.lr = lr
        self.gradNorm = gradNorm
        self.tokens = tokens
        self.seconds = seconds
        self.event = event
    }
}

/// Provenance of one shard of a merged run (`lnlens merge`).
public struct ShardRow: Codable, Sendable, Equatable {
    public var shardIndex: Int
    public var shardCount: Int
    public var sourcePath: String
    public var sourceRunID: Int64
    public var ownerHost: String?
    public var startedAt: Date
    public var endedAt: Date?
    public var nPrompts: Int

    public init(shardIndex: Int, shardCount: Int, sourcePath: String, sourceRunID: Int64, ownerHost: String?,
                startedAt: Date, endedAt: Date?, nPrompts: Int) {
        self.shardIndex = shardIndex
        self.shardCount = shardCount
        self.sourcePath = sourcePath
        self.sourceRunID = sourceRunID
        self.ownerHost = ownerHost
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.nPrompts = nPrompts
    }
}

/// How much of a run is stored (progress display, tests).
public struct RunCounts: Codable, Sendable, Equatable {
    public var prompts: Int
    public var results: Int
    public var summaries: Int
    public var batches: Int
}

/// Dates as the store reads them back: what GRDB writes ("YYYY-MM-DD HH:MM:SS.SSS", UTC) and
/// its other short forms go to GRDB's parser; anything else (a damaged or hand-edited cell, such
/// as a run of digits long enough to overflow GRDB's parser, which traps) reads as no date, so the
/// row is refused with a decoding error instead of stopping the process.
enum StoredDate {
    static func decode(_ value: DatabaseValue) -> Date? {
        guard case .string(let text) = value.storage else { return Date.fromDatabaseValue(value) }
        guard isDateText(text) else { return nil }
        return Date.fromDatabaseValue(value)
    }

    /// `YYYY-MM-DD`, optionally followed by ` HH:MM`, `:SS` and `.` with up to 9 digits (or `T`).
    static func isDateText(_ text: String) -> Bool {
        let b = Array(text.utf8)
        func digits(_ range: Range<Int>) -> Bool { range.upperBound <= b.count && b[range].allSatisfy { (0x30...0x39).contains($0) } }
        guard b.count >= 10, b.count <= 29, digits(0..<4), b[4] == 0x2D, digits(5..<7), b[7] == 0x2D, digits(8..<10) else { return false }
        if b.count == 10 { return true }
        guard b.count >= 16, b[10] == 0x20 || b[10] == 0x54, digits(11..<13), b[13] == 0x3A, digits(14..<16) else { return false }
        if b.count == 16 { return true }
        guard b.count >= 19, b[16] == 0x3A, digits(17..<19) else { return false }
        if b.count == 19 { return true }
        return b[19] == 0x2E && b.count > 20 && digits(20..<b.count)
    }
}

/// One row of `edges`: an edge's score by one method, for one prompt or (`promptIndex` nil) the
/// mean over `nPrompts` prompts.
public struct EdgeRow: Codable, Sendable, Equatable, Hashable {
    /// nil: the run's aggregate row.
    public var promptIndex: Int?
    /// hannamw/EAP-IG's node names: `input`, `a3.h2`, `m3` upstream; `a3.h2`, `m3`, `logits` downstream.
    public var upstream: String
    public var downstream: String
    /// `q`, `k` or `v` when `downstream` is a head; nil otherwise.
    public var input: String?
    /// `eap`, `eap_ig`, `exact`.
    public var method: String
    public var value: Double
    /// Aggregate rows: how many prompts the mean is over (nil on per-prompt rows).
    public var nPrompts: Int?

    public init(promptIndex: Int?, upstream: String, downstream: String, input: String?, method: String, value: Double,
                nPrompts: Int? = nil) {
        (self.promptIndex, self.upstream, self.downstream, self.input) = (promptIndex, upstream, downstream, input)
        (self.method, self.value, self.nPrompts) = (method, value, nPrompts)
    }

    /// The edge as hannamw/EAP-IG writes it: `a0.h1->a1.h2<q>`, `m1->logits`.
    public var edge: String { "\(upstream)->\(downstream)" + (input.map { "<\($0)>" } ?? "") }
    /// The edge and method, without the prompt: what aggregate rows are keyed by.
    public var edgeKey: String { edge + "/" + method }
}

/// Names of `lnlens edges` runs (docs/patching.md "Edges").
extension StoreName {
    public static let edgesCommand = "edges"
    /// `edges.method` values.
    public static let eap = "eap", eapIG = "eap_ig", exact = "exact"
    /// `summaries` scope `edges`, key an estimator (`eap`, `eap_ig`): metric `nmae` (%, against
    /// `exact` over every (prompt, edge) with an exact row) and `n` (how many).
    public static let scopeEdges = "edges"
    /// `summaries` scope `check`, key `stored`, metric `edges`: the `edges` rows a run held when it completed.
    public static let storedEdges = "edges"
}
