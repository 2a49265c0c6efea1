import Analysis
import ArgumentParser
import Distributed
import Foundation
import GPT2
import Jobs
import ResultsStore
import Support
import TensorCore
import Tokenizer

/// The tool's version, recorded with every run.
enum LNLensVersion {
    static let string = "0.1.0"

    /// `lnlens --version`: the version, the git commit of the checkout lnlens runs from (when it
    /// runs from one: `LNLENS_HOME` or the folder the binary was built in), the OpenBLAS kernel and
    /// the MPI library built in (README, Scale-out), if any.
    static var full: String {
        "lnlens \(string) (commit \(commit ?? "unknown: not run from a git checkout")); OpenBLAS kernel \(BLASInfo.coreName); "
            + (Communicator.builtWithMPI ? "MPI: \(Communicator.libraryVersion)" : "MPI: not built in (make builds it in when mpicc is found)")
    }

    /// `git rev-parse --short HEAD` in `Resources.home`, or nil.
    static var commit: String? {
        let git = Process()
        git.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        git.arguments = ["git", "-C", Resources.home.path, "rev-parse", "--short=12", "HEAD"]
        let out = Pipe()
        git.standardOutput = out
        git.standardError = FileHandle.nullDevice
        guard (try? git.run()) != nil else { return nil }
        git.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return git.terminationStatus == 0 && !text.isEmpty ? text : nil
    }
}

/// The embedded default models, found under `Resources.home`.
enum EmbeddedModels {
    static let defaultName = "gpt2-tiny"
    static let lnFreeName = "gpt2-tiny-lnfree"

    static var directory: URL { Resources.models }

    /// A spec as the user typed it, turned into what `Checkpoint.open` takes: an existing path
    /// stays; an embedded model's name (`gpt2-tiny`, `gpt2-tiny-lnfree`) becomes its folder;
    /// anything else is left for the hub cache.
    static func resolve(_ spec: String?) -> String {
        let spec = spec ?? defaultName
        if FileManager.default.fileExists(atPath: spec) { return spec }
        if !spec.contains("/") {
            let embedded = directory.appendingPathComponent(spec)
            if FileManager.default.fileExists(atPath: embedded.appendingPathComponent("config.json").path) {
                return embedded.path
            }
        }
        return spec
    }
}

/// The shipped prompt sets: a path that does not exist where the command runs is looked up in
/// `Resources.home` (so `prompts/ioi.jsonl` works from any folder), and a bare name in its
/// `prompts/` (`--prompts ioi` is `prompts/ioi.jsonl`).
enum EmbeddedPrompts {
    static func resolve(_ spec: String) -> String { ShippedFiles.resolve(spec, folder: Resources.prompts, ext: "jsonl") }
}

/// A file lnlens ships: `spec` as given when it exists (or is absolute), else under
/// `Resources.home`, and a bare name in `folder`, with or without `.ext`.
enum ShippedFiles {
    static func resolve(_ spec: String, folder: URL, ext: String) -> String {
        let fm = FileManager.default
        if fm.fileExists(atPath: spec) || spec.hasPrefix("/") { return spec }
        var candidates = [Resources.home.appendingPathComponent(spec)]
        if !spec.contains("/") {
            candidates.append(folder.appendingPathComponent(spec))
            candidates.append(folder.appendingPathComponent(spec + "." + ext))
        }
        return candidates.first { fm.fileExists(atPath: $0.path) }?.path ?? spec
    }
}

/// Loads a prompt set for `model` (a file, or a shipped set's name), printing on stderr how many
/// lines were skipped and a warning for each unknown key.
func loadPromptSet(_ spec: String, model: LoadedModel, skipInvalid: Bool, prependBOS: Bool) throws -> PromptSet {
    let tok = try model.requireTokenizer()
    let set = try PromptSet.load(url: URL(fileURLWithPath: EmbeddedPrompts.resolve(spec)), tokenizer: tok,
                                 skipInvalid: skipInvalid, prependBOS: prependBOS)
        .checked(nCtx: model.model.config.nCtx, dVocab: model.model.config.dVocab, skipInvalid: skipInvalid)
    for unknown in set.unknownKeys { printErr(unknown.warning(path: set.path)) }
    if !set.skipped.isEmpty {
        printErr("\(set.path): skipped \(set.skipped.count) invalid line(s); first: line \(set.skipped[0].line): \(set.skipped[0].reason)")
    }
    return set
}

/// Weight-processing switches shared by every command that runs a model.
struct ProcessingFlags: ParsableArguments {
    @Flag(help: "Turn off all weight processing (then logits equal transformers' logits).")
    var noProcess = false
    @Flag(help: "Do not fold LayerNorm weights and biases into the next layer.")
    var noFoldLn = false
    @Flag(help: "Do not centre the weights that write to the residual stream.")
    var noCenterWritingWeights = false
    @Flag(help: "Do not centre the unembedding over the vocabulary.")
    var noCenterUnembed = false
    @Flag(help: "Do not fold value biases into b_O.")
    var noFoldValueBiases = false

    var options: ProcessingOptions {
        if noProcess { return .none }
        return ProcessingOptions(foldLN: !noFoldLn, centerWritingWeights: !noCenterWritingWeights,
                                 centerUnembed: !noCenterUnembed, foldValueBiases: !noFoldValueBiases)
    }

    /// The switches as stored in a run's options (`processing`): a JSON object of booleans.
    var stored: [String: Bool] {
        let o = options
        return ["fold_ln": o.foldLN, "center_writing_weights": o.centerWritingWeights, "center_unembed": o.centerUnembed,
                "fold_value_biases": o.foldValueBiases]
    }
}

/// `--shard I/N` of the commands whose work splits into shards (`dla`, `patch`, `eval`).
struct ShardOption: ParsableArguments {
    @Option(help: ArgumentHelp("Run shard I of N (0 ≤ I < N): only the prompts (text windows) whose index ≡ I mod N, stored under their indices in the whole input; combine the shards with `lnlens merge`. Default: from Slurm's SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT and SLURM_ARRAY_TASK_MIN when they are set.", valueName: "I/N"))
    var shard: String?

    func validate() throws {
        if let shard {
            do { _ = try Shard(parsing: shard) } catch { throw ValidationError(error.localizedDescription) }
        }
    }

    /// `--shard`, else the Slurm array task's shard (said on stderr), else nil (the whole input).
    func resolved() throws -> Shard? {
        if let shard { return try Shard(parsing: shard) }
        let environment = ProcessInfo.processInfo.environment
        guard let fromSlurm = try Shard.slurmArrayTask(environment: environment) else { return nil }
        printErr("note: running shard \(fromSlurm) from SLURM_ARRAY_TASK_ID=\(environment["SLURM_ARRAY_TASK_ID"]!) (pass --shard I/N to choose)")
        return fromSlurm
    }
}

/// A loaded model with its checkpoint and (when the folder has one) tokenizer.
struct LoadedModel {
    let checkpoint: Checkpoint
    let model: GPT2Model
    let tokenizer: GPT2Tokenizer?

    static func load(_ spec: String?, processing: ProcessingOptions) throws -> LoadedModel {
        let checkpoint = try Checkpoint.open(EmbeddedModels.resolve(spec))
        let model = try GPT2Model(checkpoint: checkpoint, processing: processing)
        let tokenizer = try checkpoint.tokenizerDirectory.map { try GPT2Tokenizer.load(directory: $0) }
        return LoadedModel(checkpoint: checkpoint, model: model, tokenizer: tokenizer)
    }

    /// XXH64 of the weights: the hash taken while loading, or (a model built another way) hashed
    /// from the files now.
    func weightsHash() throws -> String { try model.weightsHash ?? checkpoint.weightsHash() }

    /// Every file the model was read from: config, weights (and index), tokenizer files.
    var inputFiles: [String] {
        let dir = checkpoint.directory
        return ["config.json", "model.safetensors.index.json", "vocab.json", "merges.txt", "tokenizer.json"]
            .map { dir.appendingPathComponent($0).path } + checkpoint.weightFiles.map(\.path)
    }

    /// The tokenizer, or an error saying the folder has none.
    func requireTokenizer() throws -> GPT2Tokenizer {
        guard let tokenizer else {
            throw CLIError.noTokenizer(checkpoint.directory.path)
        }
        return tokenizer
    }

    /// Token ids of `text`, with `<|endoftext|>` first when `prependBOS`.
    func tokens(for text: String, prependBOS: Bool) throws -> [Int] {
        let tok = try requireTokenizer()
        return (prependBOS ? [tok.endOfTextID] : []) + tok.encode(text)
    }
}

/// Errors of the command-line layer itself.
enum CLIError: LocalizedError {
    case noTokenizer(String)
    case usage(String)
    case io(String)

    var errorDescription: String? {
        switch self {
        case .noTokenizer(let dir):
            "\(dir) has no tokenizer (vocab.json + merges.txt or tokenizer.json): copy GPT-2's tokenizer files into it"
        case .usage(let s), .io(let s): s
        }
    }
}

/// The results database of `dla` and `patch`, opened when the first run is recorded: a bad
/// prompt file must not leave a new, empty database behind.
final class LazyDatabase {
    let path: String
    private var opened: ResultsDatabase?

    init(path: String) { self.path = path }

    func open() throws -> ResultsDatabase {
        if let opened { return opened }
        opened = try ResultsDatabase(path: path)
        return opened!
    }

    /// The runs `ids` read back with `read`, saying so on the progress line (`label`).
    func readBack<T>(_ ids: [Int64], label: String, _ read: (ResultsDatabase, Int64) throws -> T) throws -> [T] {
        let database = try open()
        let reading = ProgressLine(label: label, unit: "runs")
        reading.phase("reading \(ids.count == 1 ? "the run" : "the \(ids.count) runs") back from \(path)")
        defer { reading.finish() }
        return try ids.map { try read(database, $0) }
    }
}

/// The last line of `dla` and `patch`: where the runs are, and what to do next with them.
func printStored(_ runIDs: [Int64], db: String, shard: Shard?) {
    let runs = "run\(runIDs.count > 1 ? "s" : "") \(runIDs.map(String.init).joined(separator: ", "))"
    if let shard {
        print("stored in \(db) as shard \(shard) (\(runs)); once all \(shard.count) shards are done, combine them with: lnlens merge OUT.sqlite SHARD.sqlite…")
    } else {
        print("stored in \(db) as \(runs)" + (runIDs.count == 2 ? "; compare them with: lnlens diff \(runIDs[0]) \(runIDs[1]) --db \(db)" : ""))
    }
}
