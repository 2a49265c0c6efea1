import Analysis
import Foundation
import GPT2
import Jobs
import ResultsStore
import Support
import Tokenizer
import Training

/// One parser under fuzzing. Every thrown error is a correct answer to a bad file; a target
/// crashes only on a real bug: a trap (overflow, out-of-bounds, force unwrap), a sanitizer
/// report, a hang or runaway memory, or a result that breaks what the parser promises its callers
/// (checked with `precondition`).
enum FuzzTarget: String, CaseIterable {
    /// The bytes of a whole .safetensors file.
    case safetensors
    /// A config.json.
    case config
    /// vocab.json, a NUL byte, merges.txt.
    case tokenizer
    /// A tokenizer.json.
    case tokenizerJSON = "tokenizer-json"
    /// A prompt set (JSONL), tokenized with the GPT-2 tokenizer of models/tokenizer.
    case prompts
    /// A run's options JSON (`runs.options_json`), read as resume, merge and the reports read it.
    case runOptions = "run-options"
    /// A training checkpoint's state.json.
    case checkpoint
    /// A whole results database file (damaged pages, hand edits), read as every reader reads it.
    case sqlite
    /// A whole .npy file of token ids (`--tokens FILE.npy`).
    case npy
    /// A headerless token file (`--tokens FILE.bin`), read as u16 and as u32.
    case tokenBin = "token-bin"
    /// A JSON Lines dataset (`--dataset`, `dla --dataset`), tokenized with the GPT-2 tokenizer.
    case dataset

    /// The target named by $LNLENS_FUZZ_TARGET (main.swift sets it from the command line).
    static let current: FuzzTarget = {
        let name = ProcessInfo.processInfo.environment["LNLENS_FUZZ_TARGET"] ?? ""
        guard let target = FuzzTarget(rawValue: name) else { fatalError("unknown fuzz target \"\(name)\"") }
        return target
    }()

    /// Loads what the current target needs once, before the first input.
    static func prepare() throws {
        if current == .prompts || current == .dataset { _ = try gpt2Tokenizer.get() }
    }

    func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .safetensors: fuzzSafetensors(bytes)
        case .config: fuzzConfig(Data(bytes))
        case .tokenizer: fuzzTokenizer(Data(bytes))
        case .tokenizerJSON: fuzzTokenizerJSON(Data(bytes))
        case .prompts: fuzzPrompts(Data(bytes))
        case .runOptions: fuzzRunOptions(Data(bytes))
        case .checkpoint: fuzzCheckpoint(Data(bytes))
        case .sqlite: fuzzSQLite(Data(bytes))
        case .npy: fuzzTokenFile(bytes, npy: true, dtype: nil)
        case .tokenBin: for t in TokenDType.binTypes { fuzzTokenFile(bytes, npy: false, dtype: t) }
        case .dataset: fuzzDataset(Data(bytes))
        }
    }
}

/// The message a user would see, built so that its code runs too.
private func message(_ error: any Error) -> String {
    (error as? LocalizedError)?.errorDescription ?? "\(error)"
}

// MARK: safetensors

/// A scratch file for opening a valid input the way the CLI does (mmap), one per process.
private let scratchURL = FileManager.default.temporaryDirectory
    .appendingPathComponent("lnlens-fuzz-\(getpid()).safetensors")

private func fuzzSafetensors(_ bytes: UnsafeRawBufferPointer) {
    let layout: SafetensorsLayout
    do {
        layout = try SafetensorsFile.parse(bytes: bytes, file: "fuzz.safetensors")
    } catch {
        _ = message(error)
        return
    }
    // What readers rely on: the tensors tile the data section, each as long as its shape says.
    let dataLength = bytes.count - layout.dataStart
    var covered = 0
    for entry in layout.entries.values.sorted(by: { $0.dataOffsets.lowerBound < $1.dataOffsets.lowerBound }) {
        precondition(entry.dataOffsets.lowerBound == covered || entry.byteCount == 0, "gap or overlap")
        precondition(entry.dataOffsets.upperBound <= dataLength, "tensor beyond the file")
        precondition(entry.elementCount * entry.dtype.byteSize == entry.byteCount, "size is not the shape's")
        covered = max(covered, entry.dataOffsets.upperBound)
    }
    precondition(covered == dataLength, "data section not covered")

    // A valid header: open it as a file and read every tensor, as checkpoint import does.
    do {
        try Data(bytes).write(to: scratchURL)
        defer { try? FileManager.default.removeItem(at: scratchURL) }
        let file = try SafetensorsFile(url: scratchURL)
        precondition(file.entries == layout.entries && file.dataStart == layout.dataStart)
        for name in file.names where file.entries[name]!.dtype.isReadable {
            let tensor = try file.tensor(name)
            precondition(tensor.data.count == file.entries[name]!.elementCount)
        }
    } catch {
        preconditionFailure("a header that parses in memory fails from a file: \(error)")
    }
}

// MARK: config.json

private func fuzzConfig(_ data: Data) {
    let config: GPT2Config
    do {
        config = try GPT2Config.parse(data, file: "config.json")
    } catch {
        _ = message(error)
        return
    }
    // What parse promises: every size positive and within `limits`, heads dividing d_model.
    let sizes = [
        ("n_embd", config.dModel), ("n_layer", config.nLayers), ("n_head", config.nHeads),
        ("n_positions", config.nCtx), ("vocab_size", config.dVocab), ("n_inner", config.dMLP),
    ]
    for (key, value) in sizes {
        let limit = GPT2Config.limits.first { $0.key == key }!.max
        precondition(value > 0 && value <= limit, "\(key) = \(value) passed the checks")
    }
    precondition(config.dModel % config.nHeads == 0)
    precondition(config.layerNormEpsilon > 0 && config.layerNormEpsilon.isFinite)
    // What checkpoint import computes from it next.
    _ = (config.dHead, config.lnMode, config.parameterCount)
    for untied in [false, true] {
        for (_, shape) in Checkpoint.expectedShapes(for: config, untiedUnembedding: untied) {
            _ = shape.reduce(1, *)
        }
    }
}

// MARK: Tokenizer files

/// Text every fuzzed tokenizer encodes: pieces of each pre-tokenizer class, an added token, a
/// piece long enough for the heap BPE, every ASCII character, some that are not.
private let sampleText = "Hello world, it's me<|endoftext|> 1234 \t\n  x'll "
    + String(repeating: "abcdefgh", count: 8) + " ¡é€😀 Ġ "
    + String(String.UnicodeScalarView((0..<128).compactMap(Unicode.Scalar.init(_:))))

/// Encodes `texts` and decodes them back, byte for byte when `roundTrip`.
private func exercise(_ tokenizer: GPT2Tokenizer, texts: [String], roundTrip: Bool) {
    for text in texts {
        let ids = tokenizer.encode(text)
        let decoded = tokenizer.decode(ids)
        if roundTrip { precondition(Array(decoded.utf8) == Array(text.utf8), "decode(encode(text)) != text") }
        for id in ids.prefix(8) { _ = tokenizer.id(of: tokenizer.tokenString(id)) }
    }
    _ = (tokenizer.vocabSize, tokenizer.endOfTextID)
}

/// Fuzz-chosen text: the input's own bytes read as UTF-8, at most 512.
private func textOf(_ data: Data) -> String {
    String(decoding: data.prefix(512), as: UTF8.self)
}

private func fuzzTokenizer(_ data: Data) {
    let split = data.firstIndex(of: 0) ?? data.endIndex
    let vocab = data[data.startIndex..<split]
    let merges = split < data.endIndex ? data[(split + 1)...] : Data()
    let tokenizer: GPT2Tokenizer
    do {
        tokenizer = try GPT2Tokenizer(vocab: Data(vocab), merges: Data(merges))
    } catch {
        _ = message(error)
        return
    }
    // Every byte has a token and every merge result is its parts' bytes, so any text comes back.
    exercise(tokenizer, texts: [sampleText, textOf(Data(merges)), textOf(Data(vocab))], roundTrip: true)
}

private func fuzzTokenizerJSON(_ data: Data) {
    let tokenizer: GPT2Tokenizer
    do {
        tokenizer = try GPT2Tokenizer(tokenizerJSON: data)
    } catch {
        _ = message(error)
        return
    }
    // Added tokens may reuse an id with other bytes, so no round trip here: only no crash.
    exercise(tokenizer, texts: [sampleText, textOf(data)], roundTrip: false)
}

// MARK: Prompt sets

/// GPT-2's tokenizer, loaded once: from $LNLENS_HOME/models/tokenizer, else ./models/tokenizer.
private let gpt2Tokenizer = Result<GPT2Tokenizer, any Error> {
    let home = ProcessInfo.processInfo.environment["LNLENS_HOME"] ?? FileManager.default.currentDirectoryPath
    return try GPT2Tokenizer.load(directory: URL(fileURLWithPath: home).appendingPathComponent("models/tokenizer"))
}

private func fuzzPrompts(_ data: Data) {
    let tokenizer = try! gpt2Tokenizer.get()  // loaded by prepare()
    let set: PromptSet
    do {
        set = try PromptSet.parse(data: data, path: "prompts.jsonl", tokenizer: tokenizer, skipInvalid: true)
    } catch {
        _ = message(error)
        return
    }
    for (index, example) in set.examples.enumerated() {
        precondition(example.index == index && !example.tokens.isEmpty)
        precondition((0..<tokenizer.vocabSize).contains(example.answerID))
        precondition(example.corruptTokens.map { $0.count == example.tokens.count } ?? true)
    }
    _ = set.unknownKeys.map { $0.warning(path: set.path) }
    _ = set.skipped.map(\.reason)
    // A file without invalid lines loads the same without --skip-invalid, and with BOS too.
    if set.skipped.isEmpty {
        do {
            let strict = try PromptSet.parse(data: data, path: "prompts.jsonl", tokenizer: tokenizer, skipInvalid: false)
            precondition(strict.examples == set.examples)
            let bos = try PromptSet.parse(
                data: data, path: "prompts.jsonl", tokenizer: tokenizer, skipInvalid: false, prependBOS: true)
            precondition(bos.examples.map { $0.tokens.count } == set.examples.map { $0.tokens.count + 1 })
        } catch {
            preconditionFailure("valid with --skip-invalid, invalid without: \(error)")
        }
    }
    // What the dla runner does next.
    for nCtx in [4, 1024] {
        if let checked = try? set.checked(nCtx: nCtx, dVocab: tokenizer.vocabSize, skipInvalid: true) {
            _ = checked.batchesByLength(maxBatch: 3)
        }
    }
}

// MARK: run options

private func fuzzRunOptions(_ data: Data) {
    let json = String(decoding: data, as: UTF8.self)
    check(DLAOptions.self, json)
    check(PatchOptions.self, json)
    check(EvalOptions.self, json)
    check(TrainOptions.self, json)
    let gap = PatchOptions(json: json).minGap
    precondition(gap.isFinite && gap >= 0, "min_gap \(gap) read from \(json.prefix(80))")
    precondition(DLAOptions(json: json).minGap == gap)
}

/// Whatever `json` holds, the options read from it are the same computation as themselves, and
/// what merge and a resume write back reads back as the same options.
private func check<O: ShardOptions>(_: O.Type, _ json: String) {
    let options = O(json: json)
    precondition(O.sameComputation(options, options) == nil, "options differ from themselves")
    let merged = options.merged(into: "merged.sqlite")
    precondition(O(json: merged.json) == merged, "merge's rewrite does not read back")
    precondition(O.sameComputation(merged, options) == nil, "merge's rewrite changed the computation")
}

private func check(_: TrainOptions.Type, _ json: String) {
    let options = TrainOptions(json: json)
    precondition(TrainOptions(json: options.json) == options, "stored training options do not read back")
}

// MARK: training checkpoint

private func fuzzCheckpoint(_ data: Data) {
    guard let state = try? TrainingCheckpoint.decode(data, file: "state.json") else { return }
    // A checkpoint that decodes is one a resume can continue without indexing past an array.
    precondition((0...state.settings.steps).contains(state.stepsDone) && state.adamSteps >= 0 && state.seconds >= 0)
    if let ln = state.layerNorms {
        precondition(ln.ln1Sigma.count == ln.schedule.nLayers && ln.ln2Sigma.count == ln.schedule.nLayers)
        for step in [0, state.stepsDone, state.settings.steps - 1] {
            _ = ln.removals(at: step)
            _ = ln.plan(at: step, eps: 1e-5)
        }
    }
    _ = state.settings.learningRate.rate(at: state.stepsDone)
}

// MARK: results database

/// The database file of one input (in memory-backed /dev/shm when there is one).
private let databaseURL: URL = {
    let shm = URL(fileURLWithPath: "/dev/shm")
    let folder = FileManager.default.fileExists(atPath: shm.path) ? shm : FileManager.default.temporaryDirectory
    return folder.appendingPathComponent("lnlens-fuzz-\(getpid()).sqlite")
}()

private func fuzzSQLite(_ data: Data) {
    let path = databaseURL.path
    for suffix in ["", "-wal", "-shm", "-journal"] { unlink(path + suffix) }
    guard (try? data.write(to: databaseURL)) != nil else { return }
    defer { for suffix in ["", "-wal", "-shm", "-journal"] { unlink(path + suffix) } }
    guard let db = try? ResultsDatabase.openReadOnly(path: path, waitForWriter: false) else { return }
    _ = try? db.integrityProblems()
    _ = try? db.runsTable()
    guard let runs = try? db.runs() else { return }
    for run in runs.prefix(4) {
        guard let id = run.id else { continue }
        _ = try? db.verifiedRun(id: id)
        _ = try? db.counts(runID: id)
        _ = try? db.summaries(runID: id)
        _ = try? db.results(runID: id)
        _ = try? db.prompts(runID: id)
        _ = try? db.trainSteps(runID: id)
        _ = try? db.completedPromptIndices(runID: id)
        _ = try? db.shards(runID: id)
        _ = try? db.estimatorErrors(runID: id)
        _ = PatchOptions(json: run.optionsJSON).minGap
    }
}

// MARK: token files and datasets

/// Opens `bytes` as `--tokens` does and checks what a training relies on: the ids exactly fill
/// the data after the header, each reads, and `validate` stops at the first id outside the
/// vocabulary or counts the end-of-text ids.
private func fuzzTokenFile(_ bytes: UnsafeRawBufferPointer, npy: Bool, dtype: TokenDType?) {
    let file: TokenFile
    do {
        file = try TokenFile(MappedFile(copying: bytes), path: "fuzz", npy: npy, dtype: dtype)
    } catch {
        _ = message(error)
        return
    }
    precondition(file.count > 0 && file.dataOffset + file.count * file.dtype.byteSize == bytes.count, "ids do not fill the file")
    let vocab = 50257
    let ids = (0..<file.count).map { file[$0] }
    let firstBad = ids.firstIndex { $0 < 0 || $0 >= Int64(vocab) }
    do {
        let eots = try file.validate(vocabSize: vocab, eot: vocab - 1)
        precondition(firstBad == nil && eots == ids.filter { $0 == Int64(vocab - 1) }.count, "validate missed an id")
        _ = (file.ids(0..<file.count), file.hash)
    } catch {
        guard case let .tokenOutOfRange(_, offset, byte, value, _) = error else { preconditionFailure("validate threw \(error)") }
        precondition(offset == firstBad && value == ids[offset] && byte == file.dataOffset + offset * file.dtype.byteSize)
        _ = message(error)
    }
}

/// Reads `data` as `--dataset --field text` and cuts it as training (windows of 4 and 16) and
/// `dla --dataset` (the first 4 tokens of each row) do.
private func fuzzDataset(_ data: Data) {
    let tokenizer = try! gpt2Tokenizer.get()  // loaded by prepare()
    let rows: JSONLDataset
    let ids: [[Int]]
    do {
        rows = try JSONLDataset.parse(data, path: "rows.jsonl", field: "text")
        ids = try rows.tokenIDs(vocabSize: tokenizer.vocabSize) { $0.map { tokenizer.encode(String($0.prefix(2000))) } }
    } catch {
        _ = message(error)
        return
    }
    precondition(!rows.rows.isEmpty && ids.count == rows.rows.count && zip(rows.rows, rows.rows.dropFirst()).allSatisfy { $0.line < $1.line })
    for window in [4, 16] {
        let (tokens, cut) = DocumentCut.cut(ids.map { $0.map(Int32.init) }, window: window, eot: Int32(tokenizer.endOfTextID))
        precondition(tokens.count == cut.windows * window && cut.tokens == tokens.count + cut.droppedTokens)
        // Window by window, each is the start of one document's tokens and end-of-text.
        var w = 0
        for doc in ids {
            let full = doc + [tokenizer.endOfTextID]
            for k in 0..<(full.count / window) {
                precondition(tokens[(w * window)..<((w + 1) * window)].map(Int.init) == Array(full[(k * window)..<((k + 1) * window)]))
                w += 1
            }
        }
        precondition(w == cut.windows, "windows across documents")
    }
    do {
        let prompts = try TextPrompts.firstTokens(of: rows, context: 4, tokenizer: tokenizer, vocabSize: tokenizer.vocabSize)
        precondition(prompts.windows.count + prompts.skippedLines.count == rows.rows.count && prompts.windows.allSatisfy { $0.tokens.count == 4 })
    } catch {
        _ = message(error)
    }
}
