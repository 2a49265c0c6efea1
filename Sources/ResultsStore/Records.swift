import Foundation

/// Lifecycle of a run. A run found `running` by a later process is not necessarily dead:
/// another process may still be writing it. Resuming is always an explicit decision.
public enum RunStatus: String, Codable, Sendable, CaseIterable {
    case running, completed, failed, interrupted
}

/// The names the analyses and the store agree on. `results.quantity`, `summaries.scope` etc.
/// are free text in the schema so later analyses can add their own; these are the ones the
/// named queries and `diff` read.
public enum StoreName {
    /// `runs.command` of a DLA-versus-direct-effect run (`lnlens dla`).
    public static let dlaCommand = "dla"
    /// `runs.ln_mode` values (a CHECK constraint allows exactly these).
    public static let lnModes = ["layernorm", "ln-free"]
    /// `results.quantity`: direct logit attribution of a component.
    public static let dla = "dla"
    /// `results.quantity`: exact direct effect `f(r) − f(r − c)` of a component.
    public static let directEffect = "direct_effect"
    /// `results.quantity` of the patching analyses, per site.
    public static let activationPatching = "activation_patching"
    public static let atp = "atp"
    /// `summaries.scope`: global over all heads (key `all`), one head (key `L0H0`),
    /// one layer's heads (key `L3`), an internal check (key e.g. `components_sum`).
    public static let scopeHeads = "heads", scopeHead = "head", scopeLayer = "layer", scopeCheck = "check"
    /// `summaries.metric`: NMAE in percent.
    public static let nmae = "nmae"
}

/// What `beginRun` records about a run before any result exists.
public struct NewRun: Sendable, Equatable {
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
    public var promptSetPath: String
    public var promptSetHash: String
    public var nPrompts: Int
    public var toolVersion: String
    public var startedAt: Date

    public init(
        command: String, optionsJSON: String, modelPath: String, modelHash: String, lnMode: String,
        processingJSON: String, promptSetPath: String, promptSetHash: String, nPrompts: Int,
        toolVersion: String, startedAt: Date = Date()
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
    }
}

/// One row of `runs`.
public struct RunRecord: Codable, Sendable, Equatable {
    public var id: Int64
    public var command: String
    public var optionsJSON: String
    public var modelPath: String
    public var modelHash: String
    public var lnMode: String
    public var processingJSON: String
    public var promptSetPath: String
    public var promptSetHash: String
    public var nPrompts: Int
    public var toolVersion: String
    public var startedAt: Date
    /// NULL while running.
    public var endedAt: Date?
    public var status: RunStatus
    public var error: String?
}

/// One row of `run_prompts` (the run id is implied by the call).
public struct PromptRow: Codable, Sendable, Equatable {
    /// 0-based position of the prompt in the run, `0 ..< runs.n_prompts`.
    public var promptIndex: Int
    public var prompt: String
    public var answer: String
    public var wrong: String?
    public var nTokens: Int

    public init(promptIndex: Int, prompt: String, answer: String, wrong: String?, nTokens: Int) {
        self.promptIndex = promptIndex
        self.prompt = prompt
        self.answer = answer
        self.wrong = wrong
        self.nTokens = nTokens
    }
}

/// One row of `results`: one number per (prompt, component or site, quantity).
public struct ResultRow: Codable, Sendable, Equatable, Hashable {
    public var promptIndex: Int
    /// `embed`, `pos_embed`, `L{l}H{h}`, `L{l}_bO`, `L{l}_mlp`, or a patching site.
    public var component: String
    /// e.g. `dla`, `direct_effect`, `activation_patching`, `atp`.
    public var quantity: String
    public var value: Double

    public init(promptIndex: Int, component: String, quantity: String, value: Double) {
        self.promptIndex = promptIndex
        self.component = component
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

/// How much of a run is stored (progress display, tests).
public struct RunCounts: Codable, Sendable, Equatable {
    public var prompts: Int
    public var results: Int
    public var summaries: Int
    public var batches: Int
}
