import Foundation
import Testing
import TensorCore
@testable import GPT2

/// Strict import of GPT-2 checkpoints built in temporary folders: layouts, dtypes, the hub
/// cache, and every kind of bad input.
@Suite struct CheckpointTests {
    typealias F = CheckpointFixture

    @Test func expectedShapesFollowGPT2Layout() {
        let shapes = Dictionary(uniqueKeysWithValues: Checkpoint.expectedShapes(for: F.tinyConfig, untiedUnembedding: true)
            .map { ($0.name, $0.shape) })
        #expect(shapes.count == 2 + 2 * 12 + 2 + 1)
        #expect(shapes["wte.weight"] == [11, 8])
        #expect(shapes["wpe.weight"] == [6, 8])
        #expect(shapes["h.1.ln_1.bias"] == [8])
        #expect(shapes["h.0.attn.c_attn.weight"] == [8, 24])
        #expect(shapes["h.0.attn.c_attn.bias"] == [24])
        #expect(shapes["h.1.attn.c_proj.weight"] == [8, 8])
        #expect(shapes["h.1.mlp.c_fc.weight"] == [8, 32])
        #expect(shapes["h.1.mlp.c_fc.bias"] == [32])
        #expect(shapes["h.0.mlp.c_proj.weight"] == [32, 8])
        #expect(shapes["ln_f.weight"] == [8])
        #expect(shapes["lm_head.weight"] == [11, 8])
    }

    @Test func opensFolderAndReadsEveryTensor() throws {
        let dir = try F.temporaryDirectory()
        defer { F.remove(dir) }
        let tensors = try F.writeCheckpoint(in: dir)
        let ckpt = try Checkpoint.open(dir.path, environment: [:])
        #expect(ckpt.spec == dir.path)
        #expect(ckpt.directory.path == dir.standardizedFileURL.path)
        #expect(ckpt.config == F.tinyConfig)
        #expect(ckpt.dtypes == ["F32"])
        #expect(!ckpt.hasUntiedUnembedding)
        #expect(ckpt.tokenizerDirectory == nil)
        #expect(ckpt.weightFiles.map(\.lastPathComponent) == ["model.safetensors"])
        #expect(ckpt.tensorNames.count == 28)
        for name in ckpt.tensorNames {
            #expect(try ckpt.tensor(name) == tensors[name], "\(name)")
        }
        // Tied: lm_head.weight is wte.weight.
        #expect(try ckpt.tensor("lm_head.weight") == tensors["wte.weight"])
        expectCheckpointError(["h.9.ln_1.weight"]) { _ = try ckpt.tensor("h.9.ln_1.weight") }
        let hash = try ckpt.weightsHash()
        #expect(hash.count == 16 && hash.allSatisfy(\.isHexDigit))
        #expect(try ckpt.weightsHash() == hash)
    }

    @Test func acceptsRelativePathConfigPathAndTilde() throws {
        let dir = try F.temporaryDirectory()
        defer { F.remove(dir) }
        try F.writeCheckpoint(in: dir.appendingPathComponent("m"))
        let viaConfig = try Checkpoint.open(dir.appendingPathComponent("m/config.json").path, environment: [:])
        #expect(viaConfig.directory.lastPathComponent == "m")
        let viaTilde = try Checkpoint.open("~/m", environment: ["HOME": dir.path])
        #expect(viaTilde.directory.path == dir.appendingPathComponent("m").standardizedFileURL.path)
        let cwd = FileManager.default.currentDirectoryPath
        let relative = String(repeating: "../", count: cwd.split(separator: "/").count) + dir.path.dropFirst() + "/m"
        #expect(try Checkpoint.open(relative, environment: [:]).directory.path == viaTilde.directory.path)
    }

    @Test func findsTokenizerFiles() throws {
        let dir = try F.temporaryDirectory()
        defer { F.remove(dir) }
        try F.writeCheckpoint(in: dir)
        try Data("{}".utf8).write(to: dir.appendingPathComponent("vocab.json"))
        #expect(try Checkpoint.open(dir.path, environment: [:]).tokenizerDirectory == nil)
        try Data("#version: 0.2\n".utf8).write(to: dir.appendingPathComponent("merges.txt"))
        #expect(try Checkpoint.open(dir.path, environment: [:]).tokenizerDirectory?.path == dir.standardizedFileURL.path)
    }

    @Test func prefixedAndUnprefixedNamesGiveTheSameWeights() throws {
        let plain = try F.temporaryDirectory(), prefixed = try F.temporaryDirectory()
        defer { F.remove(plain); F.remove(prefixed) }
        let tensors = try F.writeCheckpoint(in: plain)
        try F.writeCheckpoint(in: prefixed, prefix: "transformer.", extra: [
            // Causal-mask buffers of older exports are ignored.
            "transformer.h.0.attn.bias": Tensor(shape: [1, 1, 6, 6], data: .init(repeating: 1, count: 36)),
            "transformer.h.1.attn.masked_bias": Tensor(shape: [], data: [-1e4]),
        ])
        let a = try Checkpoint.open(plain.path, environment: [:])
        let b = try Checkpoint.open(prefixed.path, environment: [:])
        #expect(b.tensorNames == a.tensorNames)
        #expect(try b.tensor("h.1.mlp.c_fc.weight") == tensors["h.1.mlp.c_fc.weight"])
        #expect(try b.weightsHash() == a.weightsHash())
    }

    @Test func untiedUnembeddingIsReadAndHashed() throws {
        let tied = try F.temporaryDirectory(), untied = try F.temporaryDirectory()
        defer { F.remove(tied); F.remove(untied) }
        try F.writeCheckpoint(in: tied)
        let tensors = try F.writeCheckpoint(in: untied, prefix: "transformer.", untied: true,
                                            config: ["tie_word_embeddings": false])
        let a = try Checkpoint.open(tied.path, environment: [:])
        let b = try Checkpoint.open(untied.path, environment: [:])
        #expect(b.hasUntiedUnembedding)
        #expect(!b.config.tieWordEmbeddings)
        #expect(b.tensorNames.last == "lm_head.weight")
        #expect(try b.tensor("lm_head.weight") == tensors["lm_head.weight"])
        #expect(try b.tensor("lm_head.weight") != b.tensor("wte.weight"))
        #expect(try a.weightsHash() != b.weightsHash())
    }

    @Test func hashChangesWithOneValue() throws {
        let a = try F.temporaryDirectory(), b = try F.temporaryDirectory()
        defer { F.remove(a); F.remove(b) }
        try F.writeCheckpoint(in: a)
        try F.writeCheckpoint(in: b) { $0["h.1.mlp.c_proj.bias"]!.data[3] += 1e-6 }
        #expect(try Checkpoint.open(a.path, environment: [:]).weightsHash()
                != Checkpoint.open(b.path, environment: [:]).weightsHash())
    }

    @Test func readsShardedCheckpoint() throws {
        let single = try F.temporaryDirectory(), sharded = try F.temporaryDirectory()
        defer { F.remove(single); F.remove(sharded) }
        let tensors = try F.writeCheckpoint(in: single)
        try F.writeShardedCheckpoint(tensors, in: sharded)
        let a = try Checkpoint.open(single.path, environment: [:])
        let b = try Checkpoint.open(sharded.path, environment: [:])
        #expect(b.weightFiles.map(\.lastPathComponent) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
        for name in b.tensorNames { #expect(try b.tensor(name) == tensors[name], "\(name)") }
        #expect(try b.weightsHash() == a.weightsHash())
    }

    @Test func readsHalfPrecisionCheckpoints() throws {
        for dtype in ["F16", "BF16"] {
            let dir = try F.temporaryDirectory()
            defer { F.remove(dir) }
            try F.writeConfig(in: dir)
            // Every element 1.5 (exact in both formats), one element -0.0 and a subnormal.
            let bits: UInt16 = dtype == "F16" ? 0x3E00 : 0x3FC0
            var raw: [CheckpointFixture.RawTensor] = []
            for (name, shape) in Checkpoint.expectedShapes(for: F.tinyConfig, untiedUnembedding: false) {
                var values = [UInt16](repeating: bits, count: shape.reduce(1, *))
                if name == "wte.weight" { values[0] = 0x8000; values[1] = 0x0001 }
                raw.append(.init(name: name, dtype: dtype, shape: shape, bytes: F.littleEndianBytes(values)))
            }
            try F.rawFile(raw).write(to: dir.appendingPathComponent("model.safetensors"))
            let ckpt = try Checkpoint.open(dir.path, environment: [:])
            #expect(ckpt.dtypes == [dtype])
            let wte = try ckpt.tensor("wte.weight")
            #expect(wte.data[0].bitPattern == 0x8000_0000)
            #expect(wte.data[1] == (dtype == "F16" ? 0x1p-24 : 0x1p-133))
            #expect(wte.data[2...].allSatisfy { $0 == 1.5 })
            #expect(try ckpt.tensor("h.1.mlp.c_fc.weight").data.allSatisfy { $0 == 1.5 })
        }
    }

    // MARK: Hub cache

    @Test func resolvesHubNamesInTheCache() throws {
        let root = try F.temporaryDirectory()
        defer { F.remove(root) }
        let hub = root.appendingPathComponent("hf/hub")
        let gpt2 = try F.writeHubModel("openai-community/gpt2", revision: "0123abcd", in: hub)
        let lnFree = try F.writeHubModel("schaeff/gpt2-small_LNFree300", revision: "feedbeef", in: hub)
        for env in [["HF_HUB_CACHE": hub.path], ["HF_HOME": root.appendingPathComponent("hf").path, "HOME": "/nonexistent"]] {
            let a = try Checkpoint.open("gpt2", environment: env)
            #expect(a.directory.path == gpt2.path)
            #expect(a.spec == "gpt2")
            #expect(try Checkpoint.open("openai-community/gpt2", environment: env).directory.path == gpt2.path)
            #expect(try Checkpoint.open("schaeff/gpt2-small_LNFree300", environment: env).directory.path == lnFree.path)
        }
        // Default location under $HOME.
        let home = root.appendingPathComponent("home")
        let defaultHub = home.appendingPathComponent(".cache/huggingface/hub")
        let fromHome = try F.writeHubModel("openai-community/gpt2", revision: "r1", in: defaultHub)
        #expect(try Checkpoint.open("gpt2", environment: ["HOME": home.path]).directory.path == fromHome.path)
        #expect(Checkpoint.hubCacheDirectory(environment: ["HOME": home.path]).path == defaultHub.path)
        #expect(Checkpoint.cachedHubModels(environment: ["HF_HUB_CACHE": hub.path])
                == ["openai-community/gpt2", "schaeff/gpt2-small_LNFree300"])
    }

    @Test func resolvesLegacyFolderAndSnapshotWithoutRef() throws {
        let root = try F.temporaryDirectory()
        defer { F.remove(root) }
        let legacy = try F.writeHubModel("gpt2", revision: "aaaa", in: root)
        #expect(try Checkpoint.open("gpt2", environment: ["HF_HUB_CACHE": root.path]).directory.path == legacy.path)
        #expect(try Checkpoint.open("openai-community/gpt2", environment: ["HF_HUB_CACHE": root.path]).directory.path == legacy.path)
        // Downloaded at a pinned revision: no refs/main, one snapshot.
        let pinned = try F.writeHubModel("someone/tiny", revision: "bbbb", in: root)
        try FileManager.default.removeItem(at: root.appendingPathComponent("models--someone--tiny/refs"))
        #expect(try Checkpoint.open("someone/tiny", environment: ["HF_HUB_CACHE": root.path]).directory.path == pinned.path)
    }

    @Test func unknownHubNameListsTheCache() throws {
        let root = try F.temporaryDirectory()
        defer { F.remove(root) }
        try F.writeHubModel("openai-community/gpt2", revision: "r", in: root)
        try F.writeHubModel("schaeff/gpt2-small_LNFree300", revision: "r", in: root)
        expectCheckpointError(["'someone/missing'", root.path, "openai-community/gpt2, schaeff/gpt2-small_LNFree300", "never downloads"]) {
            _ = try Checkpoint.open("someone/missing", environment: ["HF_HUB_CACHE": root.path])
        }
        let empty = root.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        expectCheckpointError(["'gpt2-xl' (openai-community/gpt2-xl)", empty.path, "holds no models", "never downloads"]) {
            _ = try Checkpoint.open("gpt2-xl", environment: ["HF_HUB_CACHE": empty.path])
        }
        let none = root.appendingPathComponent("none")
        expectCheckpointError([none.path, "does not exist", "never downloads"]) {
            _ = try Checkpoint.open("gpt2", environment: ["HF_HUB_CACHE": none.path])
        }
    }

    @Test func hubRefToMissingSnapshot() throws {
        let root = try F.temporaryDirectory()
        defer { F.remove(root) }
        let snapshot = try F.writeHubModel("openai-community/gpt2", revision: "r", in: root)
        try Data("other".utf8).write(to: snapshot.deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("refs/main"))
        expectCheckpointError(["'gpt2'", "snapshots/other"]) {
            _ = try Checkpoint.open("gpt2", environment: ["HF_HUB_CACHE": root.path])
        }
    }

    // MARK: Bad folders and configs

    @Test func missingFolderIsNamed() throws {
        let dir = try F.temporaryDirectory()
        defer { F.remove(dir) }
        let missing = dir.appendingPathComponent("models/nothing-here").path
        expectCheckpointError([missing, "does not exist"]) { _ = try Checkpoint.open(missing, environment: [:]) }
        let file = dir.appendingPathComponent("weights.bin")
        try Data([1]).write(to: file)
        expectCheckpointError([file.path, "not a folder"]) { _ = try Checkpoint.open(file.path, environment: [:]) }
    }

    @Test func folderWithoutConfigOrWeights() throws {
        let dir = try F.temporaryDirectory()
        defer { F.remove(dir) }
        expectCheckpointError(["config.json", dir.path]) { _ = try Checkpoint.open(dir.path, environment: [:]) }
        try F.writeConfig(in: dir)
        expectCheckpointError(["model.safetensors", dir.path]) { _ = try Checkpoint.open(dir.path, environment: [:]) }
        try Data([0]).write(to: dir.appendingPathComponent("pytorch_model.bin"))
        expectCheckpointError(["pytorch_model.bin is not read"]) { _ = try Checkpoint.open(dir.path, environment: [:]) }
    }

    @Test func configMissingKeyIsNamed() throws {
        for key in ["n_embd", "n_layer", "n_head", "vocab_size", "n_positions"] {
            let dir = try F.temporaryDirectory()
            defer { F.remove(dir) }
            try F.writeCheckpoint(in: dir, config: [key: NSNull()])
            let file = dir.appendingPathComponent("config.json").path
            expectCheckpointError([file, "missing the required key \"\(key)\""]) {
                _ = try Checkpoint.open(dir.path, environment: [:])
            }
        }
    }

    @Test func configBadJSONAndBadValues() throws {
        let dir = try F.temporaryDirectory()
        defer { F.remove(dir) }
        try F.writeCheckpoint(in: dir)
        let file = dir.appendingPathComponent("config.json")
        try Data("{\"n_embd\": 8,".utf8).write(to: file)
        expectCheckpointError([file.path, "not valid JSON"]) { _ = try Checkpoint.open(dir.path, environment: [:]) }
        try Data("[8]".utf8).write(to: file)
        expectCheckpointError([file.path, "not a JSON object"]) { _ = try Checkpoint.open(dir.path, environment: [:]) }
        for (patch, fragments) in [
            (["n_embd": "eight"] as [String: Any], ["\"n_embd\" must be an integer, not a string"]),
            (["n_embd": 64.5], ["\"n_embd\" must be an integer, not 64.5"]),
            (["n_embd": 9_223_372_036_854_775_807], ["n_embd", "at most 32768"]),
            (["n_layer": 2_147_483_648], ["n_layer", "at most 1024"]),
            (["n_layer": 3], ["n_layer", "3", "blocks 0...1"]),
            (["vocab_size": true], ["\"vocab_size\" must be an integer, not a boolean"]),
            (["tie_word_embeddings": "yes"], ["tie_word_embeddings", "true or false"]),
            (["layer_norm_epsilon": "1e-5"], ["layer_norm_epsilon", "must be a number"]),
            (["n_head": 3], ["n_embd", "divisible by n_head"]),
            (["model_type": "llama"], ["model_type", "llama", "GPT-2"]),
            (["n_layer": 0], ["n_layer", "must be positive"]),
            (["activation_function": "relu"], ["activation_function", "relu", "gelu_new"]),
        ] {
            try F.writeConfig(in: dir, patch)
            expectCheckpointError([file.path] + fragments) { _ = try Checkpoint.open(dir.path, environment: [:]) }
        }
    }

    /// Of a key given twice the checks read the last copy and the decoder the first, so
    /// `"n_layer": 2147483648, …, "n_layer": 1` passed the bound and decoded 2^31 layers.
    /// Input: fuzz/corpus/config/crash-duplicate-key.json (the config fuzz target).
    @Test func configKeyGivenTwiceIsReadOnce() throws {
        let rest = "\"n_embd\": 8, \"n_head\": 2, \"n_positions\": 4, \"vocab_size\": 300"
        let config = try GPT2Config.parse(Data("{\"n_layer\": 2147483648, \(rest), \"n_layer\": 1}".utf8), file: "config.json")
        #expect(config.nLayers == 1)  // the last, as Python's json (and so transformers) reads it
        expectCheckpointError(["config.json", "n_layer", "at most 1024"]) {
            _ = try GPT2Config.parse(Data("{\"n_layer\": 1, \(rest), \"n_layer\": 2147483648}".utf8), file: "config.json")
        }
    }

    // MARK: Bad weights

    @Test func missingTensorIsNamed() throws {
        let dir = try F.temporaryDirectory()
        defer { F.remove(dir) }
        try F.writeCheckpoint(in: dir) { $0["h.1.ln_2.bias"] = nil }
        expectCheckpointError(["missing tensor h.1.ln_2.bias", "expected shape [8]", dir.path]) {
            _ = try Checkpoint.open(dir.path, environment: [:])
        }
        try F.writeCheckpoint(in: dir) { $0["h.0.ln_1.weight"] = nil; $0["ln_f.bias"] = nil }
        expectCheckpointError(["missing tensor h.0.ln_1.weight", "and 1 more problem"]) {
            _ = try Checkpoint.open(dir.path, environment: [:])
        }
    }

    @Test func extraTensorIsNamed() throws {
        let dir = try F.temporaryDirectory()
        defer { F.remove(dir) }
        try F.writeCheckpoint(in: dir, prefix: "transformer.", extra: ["transformer.h.0.attn.q_proj.weight": Tensor(zeros: [8, 8])])
        let file = dir.appendingPathComponent("model.safetensors").path
        expectCheckpointError([file, "unexpected tensor transformer.h.0.attn.q_proj.weight"]) {
            _ = try Checkpoint.open(dir.path, environment: [:])
        }
        // A layer beyond n_layer is extra too.
        try F.writeCheckpoint(in: dir, extra: ["h.2.ln_1.weight": Tensor(zeros: [8])])
        expectCheckpointError(["unexpected tensor h.2.ln_1.weight"]) { _ = try Checkpoint.open(dir.path, environment: [:]) }
        // The same tensor with and without prefix is stored twice.
        try F.writeCheckpoint(in: dir, extra: ["transformer.wpe.weight": Tensor(zeros: [6, 8])])
        expectCheckpointError(["wpe.weight", "stored twice"]) { _ = try Checkpoint.open(dir.path, environment: [:]) }
    }

    @Test func misshapenTensorIsNamed() throws {
        let dir = try F.temporaryDirectory()
        defer { F.remove(dir) }
        // A Linear-style [out, in] weight where GPT-2's Conv1D stores [in, out].
        try F.writeCheckpoint(in: dir) { $0["h.0.attn.c_attn.weight"] = Tensor(zeros: [24, 8]) }
        expectCheckpointError(["tensor h.0.attn.c_attn.weight", "shape [24, 8]", "expected [8, 24]"]) {
            _ = try Checkpoint.open(dir.path, environment: [:])
        }
        try F.writeCheckpoint(in: dir, untied: true, config: ["tie_word_embeddings": false]) {
            $0["lm_head.weight"] = Tensor(zeros: [10, 8])
        }
        expectCheckpointError(["tensor lm_head.weight", "shape [10, 8]", "expected [11, 8]"]) {
            _ = try Checkpoint.open(dir.path, environment: [:])
        }
    }

    @Test func untiedConfigNeedsUnembedding() throws {
        let dir = try F.temporaryDirectory()
        defer { F.remove(dir) }
        try F.writeCheckpoint(in: dir, config: ["tie_word_embeddings": false])
        expectCheckpointError(["tie_word_embeddings", "lm_head.weight"]) { _ = try Checkpoint.open(dir.path, environment: [:]) }
    }

    @Test func missingShardIsNamed() throws {
        let dir = try F.temporaryDirectory()
        defer { F.remove(dir) }
        try F.writeShardedCheckpoint(F.tinyTensors(), in: dir)
        let shard = dir.appendingPathComponent("model-00002-of-00002.safetensors")
        try FileManager.default.removeItem(at: shard)
        expectCheckpointError([shard.path, "model.safetensors.index.json", "does not exist"]) {
            _ = try Checkpoint.open(dir.path, environment: [:])
        }
        let index = dir.appendingPathComponent("model.safetensors.index.json")
        try Data("{\"metadata\": {}}".utf8).write(to: index)
        expectCheckpointError([index.path, "weight_map"]) { _ = try Checkpoint.open(dir.path, environment: [:]) }
    }

    @Test func corruptWeightFileIsNamed() throws {
        let dir = try F.temporaryDirectory()
        defer { F.remove(dir) }
        try F.writeCheckpoint(in: dir)
        let file = dir.appendingPathComponent("model.safetensors")
        let bytes = try Data(contentsOf: file)
        try bytes.prefix(bytes.count - 10).write(to: file)
        expectCheckpointError([file.path, "tensor wte.weight", "beyond"]) { _ = try Checkpoint.open(dir.path, environment: [:]) }
        try bytes.prefix(100).write(to: file)
        expectCheckpointError([file.path, "header length", "beyond"]) { _ = try Checkpoint.open(dir.path, environment: [:]) }
    }

    @Test func nonFloatTensorIsRejected() throws {
        let dir = try F.temporaryDirectory()
        defer { F.remove(dir) }
        try F.writeConfig(in: dir)
        var raw: [CheckpointFixture.RawTensor] = Checkpoint.expectedShapes(for: F.tinyConfig, untiedUnembedding: false).map {
            .init(name: $0.name, dtype: "F32", shape: $0.shape, bytes: [UInt8](repeating: 0, count: 4 * $0.shape.reduce(1, *)))
        }
        raw[1] = .init(name: "wpe.weight", dtype: "I32", shape: [6, 8], bytes: [UInt8](repeating: 0, count: 4 * 48))
        try F.rawFile(raw).write(to: dir.appendingPathComponent("model.safetensors"))
        expectCheckpointError(["tensor wpe.weight", "I32", "F32, F16, BF16"]) { _ = try Checkpoint.open(dir.path, environment: [:]) }
    }
}

// MARK: - Support

/// Asserts that `body` throws a `GPT2Error` whose one-line message contains every fragment.
func expectCheckpointError(_ fragments: [String], sourceLocation: SourceLocation = #_sourceLocation,
                           _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected an error mentioning \(fragments)", sourceLocation: sourceLocation)
    } catch let error as GPT2Error {
        let message = error.errorDescription ?? ""
        for fragment in fragments where !message.contains(fragment) {
            Issue.record("message lacks \"\(fragment)\": \(message)", sourceLocation: sourceLocation)
        }
        #expect(!message.contains("\n"), "message is not one line: \(message)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a GPT2Error, got \(error)", sourceLocation: sourceLocation)
    }
}

/// Builds tiny GPT-2 checkpoints (dModel 8, 2 layers, 2 heads, vocab 11, nCtx 6) and raw
/// safetensors files for tests.
enum CheckpointFixture {
    static let tinyConfig = GPT2Config(dModel: 8, nLayers: 2, nHeads: 2, nCtx: 6, dVocab: 11)
    static var tinyConfigJSON: [String: Any] {[
        "model_type": "gpt2", "n_embd": 8, "n_layer": 2, "n_head": 2, "n_positions": 6, "n_ctx": 6,
        "vocab_size": 11, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
    ]}

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-ckpt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static func remove(_ url: URL) { try? FileManager.default.removeItem(at: url) }

    /// Writes config.json: the tiny config with `patch` applied (NSNull removes a key).
    static func writeConfig(in dir: URL, _ patch: [String: Any] = [:]) throws {
        var json = tinyConfigJSON
        for (key, value) in patch { json[key] = value is NSNull ? nil : value }
        if patch["n_positions"] is NSNull { json["n_ctx"] = nil }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
            .write(to: dir.appendingPathComponent("config.json"))
    }

    /// Distinct deterministic values for every canonical tensor of the tiny config.
    static func tinyTensors(untied: Bool = false) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (k, entry) in Checkpoint.expectedShapes(for: tinyConfig, untiedUnembedding: untied).enumerated() {
            let n = entry.shape.reduce(1, *)
            out[entry.name] = Tensor(shape: entry.shape, data: (0..<n).map { Float(k) + Float($0 % 13) * 0.125 - 0.75 })
        }
        return out
    }

    /// Writes config.json and model.safetensors; returns the canonical tensors written.
    @discardableResult
    static func writeCheckpoint(in dir: URL, prefix: String = "", untied: Bool = false, config: [String: Any] = [:],
                                extra: [String: Tensor] = [:], edit: (inout [String: Tensor]) -> Void = { _ in }) throws
        -> [String: Tensor]
    {
        try writeConfig(in: dir, config)
        var tensors = tinyTensors(untied: untied)
        edit(&tensors)
        var stored: [String: Tensor] = extra
        for (name, t) in tensors { stored[name == "lm_head.weight" ? name : prefix + name] = t }
        try SafetensorsWriter.write(stored, metadata: ["format": "pt"], to: dir.appendingPathComponent("model.safetensors"))
        return tensors
    }

    /// Writes config.json, two shards and model.safetensors.index.json.
    static func writeShardedCheckpoint(_ tensors: [String: Tensor], in dir: URL) throws {
        try writeConfig(in: dir)
        let names = tensors.keys.sorted()
        let shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        var weightMap: [String: String] = [:]
        for (i, part) in [names.filter { !$0.hasPrefix("h.1.") }, names.filter { $0.hasPrefix("h.1.") }].enumerated() {
            let stored = Dictionary(uniqueKeysWithValues: part.map { ("transformer." + $0, tensors[$0]!) })
            try SafetensorsWriter.write(stored, to: dir.appendingPathComponent(shards[i]))
            for name in stored.keys { weightMap[name] = shards[i] }
        }
        let index: [String: Any] = ["metadata": ["total_size": 0], "weight_map": weightMap]
        try JSONSerialization.data(withJSONObject: index).write(to: dir.appendingPathComponent("model.safetensors.index.json"))
    }

    /// Creates `models--ORG--NAME/{refs/main, snapshots/<revision>/}` holding a tiny checkpoint;
    /// returns the snapshot folder.
    @discardableResult
    static func writeHubModel(_ name: String, revision: String, in hub: URL) throws -> URL {
        let model = hub.appendingPathComponent("models--" + name.replacingOccurrences(of: "/", with: "--"))
        let snapshot = model.appendingPathComponent("snapshots/\(revision)")
        try writeCheckpoint(in: snapshot)
        // Like the real cache: snapshot files are relative symlinks into blobs/.
        let blobs = model.appendingPathComponent("blobs")
        try FileManager.default.createDirectory(at: blobs, withIntermediateDirectories: true)
        let blob = blobs.appendingPathComponent("blob-\(revision)")
        try FileManager.default.moveItem(at: snapshot.appendingPathComponent("model.safetensors"), to: blob)
        try FileManager.default.createSymbolicLink(atPath: snapshot.appendingPathComponent("model.safetensors").path,
                                                   withDestinationPath: "../../blobs/blob-\(revision)")
        try FileManager.default.createDirectory(at: model.appendingPathComponent("refs"), withIntermediateDirectories: true)
        try Data((revision + "\n").utf8).write(to: model.appendingPathComponent("refs/main"))
        return snapshot.standardizedFileURL
    }

    struct RawTensor {
        var name: String
        var dtype: String
        var shape: [Int]
        var bytes: [UInt8]
    }

    /// A safetensors file from raw tensors laid out back to back, any dtype.
    static func rawFile(_ tensors: [RawTensor], headerPadding: Int = 0) -> Data {
        var offset = 0
        var fields: [String] = []
        for t in tensors {
            fields.append("\"\(t.name)\":{\"dtype\":\"\(t.dtype)\",\"shape\":\(t.shape),\"data_offsets\":[\(offset),\(offset + t.bytes.count)]}")
            offset += t.bytes.count
        }
        let header = "{" + fields.joined(separator: ",") + "}" + String(repeating: " ", count: headerPadding)
        return rawFile(header: header, data: tensors.flatMap(\.bytes))
    }

    /// `header` preceded by its length (or `headerLength`, to lie about it) and followed by `data`.
    static func rawFile(header: String, data: [UInt8], headerLength: UInt64? = nil) -> Data {
        let h = Array(header.utf8)
        return Data(littleEndianBytes([headerLength ?? UInt64(h.count)]) + h + data)
    }

    static func littleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
        values.flatMap { v in (0..<T.bitWidth / 8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    }
}
