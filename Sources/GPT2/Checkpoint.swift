import Foundation
import Support
import TensorCore

/// A GPT-2 checkpoint opened from a Hugging Face-layout folder and verified strictly.
///
/// `open` resolves the folder (a path, or a model name in the local hub cache — never the
/// network), decodes `config.json`, memory-maps the safetensors file(s) and checks that they
/// hold exactly the tensors GPT-2 needs with the shapes `config.json` implies. Tensors are read
/// (and converted to Float32) only when asked for, by canonical name: without the
/// `transformer.` prefix, e.g. `wte.weight`, `h.0.attn.c_attn.weight`, `ln_f.bias`,
/// `lm_head.weight`. Conv1D weights keep GPT-2's stored `[in, out]` layout.
public struct Checkpoint: Sendable {
    /// What the user passed: a folder path or a hub name.
    public let spec: String
    /// The resolved model folder (for hub names, the cache snapshot folder).
    public let directory: URL
    public let config: GPT2Config
    /// The safetensors files the weights come from, sorted.
    public let weightFiles: [URL]
    /// Canonical names of the stored tensors, in import order (see `expectedShapes`).
    public let tensorNames: [String]
    /// The folder itself when it holds `vocab.json` + `merges.txt` or `tokenizer.json`.
    public let tokenizerDirectory: URL?
    /// Stored dtypes of the imported tensors, e.g. ["F32"].
    public let dtypes: Set<String>

    private struct Source: Sendable {
        let file: SafetensorsFile
        let name: String
        var entry: SafetensorsEntry { file.entries[name]! }
    }
    private let sources: [String: Source]

    /// The name tensor `canonicalName` has in the checkpoint's files (with its `transformer.`
    /// prefix, if the file uses one).
    public func storedName(_ canonicalName: String) -> String { sources[canonicalName]?.name ?? canonicalName }

    /// True when the checkpoint stores its own `lm_head.weight`; false when the unembedding
    /// is tied to `wte.weight`.
    public var hasUntiedUnembedding: Bool { sources["lm_head.weight"] != nil }

    /// Canonical tensor `canonicalName` as Float32 with its stored shape. When the unembedding
    /// is tied, `lm_head.weight` returns `wte.weight` (same `[dVocab, dModel]` shape).
    /// Non-finite values (NaN, ±Inf) are an error naming the file, tensor and count: no analysis
    /// of such weights means anything.
    public func tensor(_ canonicalName: String) throws -> Tensor {
        var source = sources[canonicalName]
        if source == nil, canonicalName == "lm_head.weight" { source = sources["wte.weight"] }
        guard let s = source else { throw GPT2Error.unknownCanonicalTensor(name: canonicalName) }
        let t = try s.file.tensor(s.name)
        let bad = t.data.withUnsafeBufferPointer { p in p.reduce(0) { $0 + ($1.isFinite ? 0 : 1) } }
        if bad > 0 { throw GPT2Error.nonFiniteWeights(file: s.file.url.path, tensor: s.name, count: bad, total: t.count) }
        return t
    }

    /// Reads every checkpoint tensor of `parameters`' table into it (converted to Float32, checked
    /// finite), copies the unembedding into its own entry when the table has one, and returns the
    /// weights hash (`weightsHash`), computed in the same pass. Each tensor's mapped pages are
    /// released once read, so the file does not stay resident beside the model.
    public func load(into parameters: ModelParameters) throws -> String {
        let table = parameters.table
        var summary: [UInt8] = []
        for entry in table.checkpointEntries {
            guard let s = sources[entry.name] else { throw GPT2Error.unknownCanonicalTensor(name: entry.name) }
            let e = s.entry
            let destination = parameters.arena.base + entry.offset
            try s.file.read(s.name, into: destination)
            let bad = (0..<entry.count).reduce(0) { $0 + (destination[$1].isFinite ? 0 : 1) }
            if bad > 0 {
                throw GPT2Error.nonFiniteWeights(file: s.file.url.path, tensor: s.name, count: bad, total: entry.count)
            }
            let bytesHash = try s.file.withRawBytes(s.name) { XXH64.hash($0, seed: 0) }
            summary += Array("\(entry.name)|\(e.dtype.rawValue)|\(e.shape)|\(XXH64.hex(bytesHash))\n".utf8)
            s.file.release(s.name)
        }
        if table.unembeddingName == "unembed.weight" {
            let source = hasUntiedUnembedding && !config.tieWordEmbeddings ? "lm_head.weight" : "wte.weight"
            let from = table.entry(source)!, to = table.entry("unembed.weight")!
            (parameters.arena.base + to.offset).update(from: parameters.arena.base + from.offset, count: to.count)
        }
        return XXH64.hex(summary.withUnsafeBytes { XXH64.hash($0, seed: 0) })
    }

    /// Content hash of the weights: XXH64 over every tensor's canonical name, dtype, shape and
    /// stored bytes, in `tensorNames` order; 16 hex digits. Independent of the `transformer.`
    /// prefix and of how the tensors are split into shards.
    public func weightsHash() throws -> String {
        var summary: [UInt8] = []
        for name in tensorNames {
            let s = sources[name]!
            let e = s.entry
            let bytesHash = try s.file.withRawBytes(s.name) { XXH64.hash($0, seed: 0) }
            // Give the mapped pages back, as `load` does: hashing must not leave the file resident.
            s.file.release(s.name)
            summary += Array("\(name)|\(e.dtype.rawValue)|\(e.shape)|\(XXH64.hex(bytesHash))\n".utf8)
        }
        return XXH64.hex(summary.withUnsafeBytes { XXH64.hash($0, seed: 0) })
    }

    /// Every tensor a GPT-2 checkpoint with `config` must hold, canonical names and stored shapes,
    /// in import order: `wte`, `wpe`, the blocks, `ln_f`, then `lm_head` when untied.
    public static func expectedShapes(for config: GPT2Config, untiedUnembedding: Bool) -> [(name: String, shape: [Int])] {
        let d = config.dModel, m = config.dMLP
        var list: [(name: String, shape: [Int])] = [("wte.weight", [config.dVocab, d]), ("wpe.weight", [config.nCtx, d])]
        for i in 0..<config.nLayers {
            let p = "h.\(i)."
            list += [
                (p + "ln_1.weight", [d]), (p + "ln_1.bias", [d]),
                (p + "attn.c_attn.weight", [d, 3 * d]), (p + "attn.c_attn.bias", [3 * d]),
                (p + "attn.c_proj.weight", [d, d]), (p + "attn.c_proj.bias", [d]),
                (p + "ln_2.weight", [d]), (p + "ln_2.bias", [d]),
                (p + "mlp.c_fc.weight", [d, m]), (p + "mlp.c_fc.bias", [m]),
                (p + "mlp.c_proj.weight", [m, d]), (p + "mlp.c_proj.bias", [d]),
            ]
        }
        list += [("ln_f.weight", [d]), ("ln_f.bias", [d])]
        if untiedUnembedding { list.append(("lm_head.weight", [config.dVocab, d])) }
        return list
    }

    // MARK: Opening

    /// Opens and verifies the checkpoint named by `spec`: a folder path (absolute, relative,
    /// `~/…`, or the path of its `config.json`) or a hub name (`gpt2`, `openai-community/gpt2`,
    /// `schaeff/gpt2-small_LNFree300`) looked up offline in the Hugging Face hub cache.
    /// An existing folder wins over a hub name of the same spelling.
    public static func open(_ spec: String,
                            environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Checkpoint {
        let directory = try resolveDirectory(spec, environment: environment)
        let config = try readConfig(in: directory)
        let files = try openWeightFiles(in: directory)

        let (found, unexpected) = try collectTensors(files)
        let expected = try verify(found, unexpected: unexpected, config: config, directory: directory)
        let expectedNames = Set(expected.map(\.name))
        let fm = FileManager.default
        func has(_ file: String) -> Bool { fm.fileExists(atPath: directory.appendingPathComponent(file).path) }
        let tokenizer = (has("vocab.json") && has("merges.txt")) || has("tokenizer.json")
        return Checkpoint(
            spec: spec, directory: directory, config: config,
            weightFiles: files.map(\.url).sorted { $0.path < $1.path },
            tensorNames: expected.map(\.name),
            tokenizerDirectory: tokenizer ? directory : nil,
            dtypes: Set(expected.map { found[$0.name]!.entry.dtype.rawValue }),
            sources: found.filter { expectedNames.contains($0.key) })
    }

    /// Every tensor of `files` under its name without the `transformer.` prefix (buffers left
    /// out), and the names that are not GPT-2's at all; a name held twice is an error.
    private static func collectTensors(_ files: [SafetensorsFile]) throws
        -> (found: [String: Source], unexpected: [(tensor: String, file: String)]) {
        var found: [String: Source] = [:]
        var unexpected: [(tensor: String, file: String)] = []
        for file in files {
            for stored in file.names {
                var name = stored
                if name.hasPrefix("transformer.") {
                    name.removeFirst("transformer.".count)
                    if name == "lm_head.weight" { unexpected.append((stored, file.url.path)); continue }
                }
                if isIgnoredBuffer(name) { continue }
                if let prior = found[name] {
                    throw GPT2Error.duplicateTensor(tensor: name, file: prior.file.url.path, otherFile: file.url.path)
                }
                found[name] = Source(file: file, name: stored)
            }
        }
        return (found, unexpected)
    }

    /// Checks the tensors found against `config`: the blocks it names exist, every expected tensor
    /// is there with its shape and a readable dtype, nothing else is; returns the expected
    /// tensors (with `lm_head.weight` when the checkpoint holds one).
    private static func verify(_ found: [String: Source], unexpected: [(tensor: String, file: String)],
                               config: GPT2Config, directory: URL) throws -> [(name: String, shape: [Int])] {
        var unexpected = unexpected
        // The config against the blocks that exist, before n_layer sizes anything.
        let blocks = Set(found.keys.compactMap(blockIndex))
        if (blocks.max() ?? -1) + 1 < config.nLayers {
            let held = blocks.max().map { "blocks 0...\($0) (h.0 … h.\($0))" } ?? "no blocks (h.0.…)"
            throw GPT2Error.configBadValue(
                file: directory.appendingPathComponent("config.json").path, key: "n_layer",
                reason: "is \(config.nLayers) but the weights hold \(held); fix config.json or the weight files")
        }
        let expected = expectedShapes(for: config, untiedUnembedding: found["lm_head.weight"] != nil)
        var problems: [GPT2Error] = []
        for (name, shape) in expected {
            guard let s = found[name] else {
                problems.append(.missingTensor(directory: directory.path, tensor: name, expected: shape, more: 0))
                continue
            }
            if s.entry.shape != shape {
                problems.append(.misshapenTensor(file: s.file.url.path, tensor: s.name, expected: shape, found: s.entry.shape, more: 0))
            }
        }
        let expectedNames = Set(expected.map(\.name))
        for name in found.keys.sorted() where !expectedNames.contains(name) {
            unexpected.append((found[name]!.name, found[name]!.file.url.path))
        }
        problems += unexpected.map { .unexpectedTensor(file: $0.file, tensor: $0.tensor, more: 0) }
        if let first = problems.first { throw first.withMore(problems.count - 1) }

        for (name, _) in expected {
            let s = found[name]!
            guard s.entry.dtype.isReadable else {
                throw GPT2Error.unsupportedDType(file: s.file.url.path, tensor: s.name, dtype: s.entry.dtype.rawValue)
            }
        }
        if !config.tieWordEmbeddings && found["lm_head.weight"] == nil {
            throw GPT2Error.untiedWithoutUnembedding(directory: directory.path)
        }
        return expected
    }

    /// N of a tensor named `h.N.…`.
    private static func blockIndex(_ name: String) -> Int? {
        guard name.hasPrefix("h.") else { return nil }
        let rest = name.dropFirst(2)
        guard let dot = rest.firstIndex(of: "."), let n = Int(rest[..<dot]), n >= 0 else { return nil }
        return n
    }

    /// `h.N.attn.bias` and `h.N.attn.masked_bias`: causal-mask buffers older exports include.
    private static func isIgnoredBuffer(_ name: String) -> Bool {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "h" && Int(parts[1]) != nil && parts[2] == "attn"
            && (parts[3] == "bias" || parts[3] == "masked_bias")
    }

    // MARK: Resolving the folder

    static func resolveDirectory(_ spec: String, environment: [String: String]) throws -> URL {
        var path = spec
        if path == "~" || path.hasPrefix("~/") {
            path = homeDirectory(environment) + path.dropFirst()
        }
        let url = URL(fileURLWithPath: path).standardizedFileURL
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) {
            if isDirectory.boolValue { return url }
            if url.lastPathComponent == "config.json" { return url.deletingLastPathComponent() }
            throw GPT2Error.notAFolder(path: url.path)
        }
        if looksLikeHubName(spec) { return try resolveHubName(spec, environment: environment) }
        throw GPT2Error.folderNotFound(path: url.path)
    }

    /// `name` or `org/name` with Hugging Face repo-id characters.
    private static func looksLikeHubName(_ spec: String) -> Bool {
        let parts = spec.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count) else { return false }
        return parts.allSatisfy { part in
            !part.isEmpty && part.first != "." && part.first != "-"
                && part.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
        }
    }

    /// The Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    public static func hubCacheDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let cache = environment["HF_HUB_CACHE"], !cache.isEmpty { return URL(fileURLWithPath: cache).standardizedFileURL }
        if let home = environment["HF_HOME"], !home.isEmpty {
            return URL(fileURLWithPath: home).appendingPathComponent("hub").standardizedFileURL
        }
        return URL(fileURLWithPath: homeDirectory(environment)).appendingPathComponent(".cache/huggingface/hub")
    }

    /// Models in the hub cache as `org/name` (or legacy `name`), sorted; nil when the cache folder is missing.
    public static func cachedHubModels(environment: [String: String] = ProcessInfo.processInfo.environment) -> [String]? {
        let cache = hubCacheDirectory(environment: environment)
        guard let items = try? FileManager.default.contentsOfDirectory(atPath: cache.path) else { return nil }
        return items.filter { $0.hasPrefix("models--") }
            .map { String($0.dropFirst("models--".count)).replacingOccurrences(of: "--", with: "/") }
            .sorted()
    }

    /// Legacy unprefixed names on the Hub that now live under an organisation.
    private static let hubAliases = [
        "gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",
        "gpt2-large": "openai-community/gpt2-large", "gpt2-xl": "openai-community/gpt2-xl",
        "distilgpt2": "distilbert/distilgpt2",
    ]

    private static func resolveHubName(_ spec: String, environment: [String: String]) throws -> URL {
        let fm = FileManager.default
        let cache = hubCacheDirectory(environment: environment)
        let repo = hubAliases[spec] ?? spec
        var candidates = [repo]
        if let legacy = hubAliases.first(where: { $0.value == repo })?.key { candidates.append(legacy) }
        for candidate in candidates {
            let model = cache.appendingPathComponent("models--" + candidate.replacingOccurrences(of: "/", with: "--"))
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: model.path, isDirectory: &isDirectory), isDirectory.boolValue else { continue }
            let snapshots = model.appendingPathComponent("snapshots")
            let ref = model.appendingPathComponent("refs/main")
            if let revision = try? String(contentsOf: ref, encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines), !revision.isEmpty {
                let snapshot = snapshots.appendingPathComponent(revision)
                guard fm.fileExists(atPath: snapshot.path) else {
                    throw GPT2Error.hubSnapshotMissing(name: spec, path: snapshot.path)
                }
                return snapshot
            }
            // No refs/main (downloaded at a pinned revision): accept a single snapshot.
            let revisions = (try? fm.contentsOfDirectory(atPath: snapshots.path))?.filter { !$0.hasPrefix(".") } ?? []
            guard revisions.count == 1 else {
                throw GPT2Error.hubSnapshotMissing(name: spec, path: ref.path)
            }
            return snapshots.appendingPathComponent(revisions[0])
        }
        throw GPT2Error.hubModelNotCached(name: spec, repo: repo, cache: cache.path,
                                                holds: cachedHubModels(environment: environment))
    }

    private static func homeDirectory(_ environment: [String: String]) -> String {
        if let home = environment["HOME"], !home.isEmpty { return home }
        return NSHomeDirectory()
    }

    // MARK: config.json

    private static func readConfig(in directory: URL) throws -> GPT2Config {
        let url = directory.appendingPathComponent("config.json")
        let file = url.path
        guard FileManager.default.fileExists(atPath: file) else {
            throw GPT2Error.configMissing(directory: directory.path)
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw GPT2Error.fileUnreadable(file: file, reason: error.localizedDescription)
        }
        return try GPT2Config.parse(data, file: file)
    }

    // MARK: Weight files

    private static func openWeightFiles(in directory: URL) throws -> [SafetensorsFile] {
        let fm = FileManager.default
        let single = directory.appendingPathComponent("model.safetensors")
        if fm.fileExists(atPath: single.path) { return [try SafetensorsFile(url: single)] }
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        guard fm.fileExists(atPath: index.path) else {
            let hint = fm.fileExists(atPath: directory.appendingPathComponent("pytorch_model.bin").path)
                ? "; pytorch_model.bin is not read: convert it to safetensors (transformers save_pretrained(..., safe_serialization=True))"
                : "; download the weights in safetensors format"
            throw GPT2Error.noWeights(directory: directory.path, hint: hint)
        }
        guard let data = try? Data(contentsOf: index),
              let object = try? JSONSerialization.jsonObject(with: data)
        else { throw GPT2Error.indexInvalid(file: index.path, reason: "not valid JSON") }
        guard let weightMap = (object as? [String: Any])?["weight_map"] as? [String: Any] else {
            throw GPT2Error.indexInvalid(file: index.path, reason: "no \"weight_map\" object")
        }
        var shardOf: [String: String] = [:]
        for (tensor, value) in weightMap {
            guard let shard = value as? String, !shard.isEmpty, !shard.contains("/"), shard != "..", shard != "." else {
                throw GPT2Error.indexInvalid(file: index.path, reason: "tensor \(tensor) maps to \(value), not a file name in the folder")
            }
            shardOf[tensor] = shard
        }
        var files: [String: SafetensorsFile] = [:]
        for shard in Set(shardOf.values).sorted() {
            let url = directory.appendingPathComponent(shard)
            guard fm.fileExists(atPath: url.path) else {
                throw GPT2Error.shardMissing(index: index.path, shard: url.path)
            }
            files[shard] = try SafetensorsFile(url: url)
        }
        for (tensor, shard) in shardOf.sorted(by: { $0.key < $1.key }) where files[shard]!.entries[tensor] == nil {
            throw GPT2Error.shardLacksTensor(index: index.path, shard: files[shard]!.url.path, tensor: tensor)
        }
        return files.keys.sorted().map { files[$0]! }
    }
}

extension GPT2Error {
    /// The same problem, reporting `more` further problems.
    func withMore(_ more: Int) -> GPT2Error {
        switch self {
        case let .missingTensor(d, t, e, _): .missingTensor(directory: d, tensor: t, expected: e, more: more)
        case let .unexpectedTensor(f, t, _): .unexpectedTensor(file: f, tensor: t, more: more)
        case let .misshapenTensor(f, t, e, found, _): .misshapenTensor(file: f, tensor: t, expected: e, found: found, more: more)
        default: self
        }
    }
}
