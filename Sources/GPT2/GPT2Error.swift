import Foundation
import TensorCore

/// Everything that can go wrong in the GPT2 module: a model folder, a hub-cache name or a
/// safetensors file; running a model (token input, hook names, interventions, gradients).
/// Each message is one line that names the file (and tensor or key) or option and says what to do.
public enum GPT2Error: LocalizedError, Equatable, Sendable {
    // Resolving the model spec.
    case outOfMemory(MemoryError)
    case folderNotFound(path: String)
    case notAFolder(path: String)
    /// `holds` is nil when the cache folder does not exist.
    case hubModelNotCached(name: String, repo: String, cache: String, holds: [String]?)
    case hubSnapshotMissing(name: String, path: String)
    // config.json
    case configMissing(directory: String)
    case configInvalidJSON(file: String, reason: String)
    case configMissingKey(file: String, key: String)
    case configBadValue(file: String, key: String, reason: String)
    // Weight files.
    case noWeights(directory: String, hint: String)
    case indexInvalid(file: String, reason: String)
    case shardMissing(index: String, shard: String)
    case shardLacksTensor(index: String, shard: String, tensor: String)
    case duplicateTensor(tensor: String, file: String, otherFile: String)
    // The safetensors format.
    case fileUnreadable(file: String, reason: String)
    case fileTooShort(file: String, size: Int)
    case headerLengthBeyondFile(file: String, headerLength: UInt64, fileSize: Int)
    case headerInvalid(file: String, reason: String)
    case entryInvalid(file: String, tensor: String, reason: String)
    case unknownDType(file: String, tensor: String, dtype: String)
    case unsupportedDType(file: String, tensor: String, dtype: String)
    case sizeMismatch(file: String, tensor: String, shape: [Int], dtype: String, expectedBytes: Int, foundBytes: Int)
    case offsetsOutOfRange(file: String, tensor: String, begin: Int, end: Int, dataLength: Int)
    case overlappingOffsets(file: String, tensor: String, other: String)
    case dataNotCovered(file: String, reason: String)
    case nonFiniteWeights(file: String, tensor: String, count: Int, total: Int)
    case noSuchTensor(file: String, tensor: String)
    case writeFailed(file: String, reason: String)
    // Strict GPT-2 import; `more` counts further problems of any kind.
    case missingTensor(directory: String, tensor: String, expected: [Int], more: Int)
    case unexpectedTensor(file: String, tensor: String, more: Int)
    case misshapenTensor(file: String, tensor: String, expected: [Int], found: [Int], more: Int)
    case untiedWithoutUnembedding(directory: String)
    case unknownCanonicalTensor(name: String)
    // Running a model.
    case emptyPrompt
    case promptTooLong(tokens: Int, nCtx: Int)
    case tokenOutOfRange(id: Int, dVocab: Int)
    case unequalLengths(first: Int, other: Int, index: Int)
    case unknownPattern(String)
    case layerOutOfRange(String, nLayers: Int)
    case interventionShape(hook: String, expected: [Int], got: [Int])
    case positionOutOfRange(hook: String, position: Int, length: Int)
    case headOutOfRange(hook: String, head: Int, nHeads: Int)
    case headsOnNonHeadHook(hook: String)
    case customNotDifferentiable(hook: String)
    /// An intervention or cache request at a hook a pass started after (`runFromResidMid`).
    case hookBeforeStart(hook: String, start: String)
    case backwardNeedsRetainedPass
    case metricNeedsLogits(metric: String, positions: String)
    case tokenOutOfVocabulary(what: String, id: Int, dVocab: Int)
    case exportNeedsCheckpointParameters


    public var errorDescription: String? {
        switch self {
        case let .outOfMemory(error):
            return error.errorDescription ?? "out of memory"
        case .folderNotFound(let path):
            return "model folder \(path) does not exist; pass a folder holding config.json and model.safetensors, or a model name in the Hugging Face cache"
        case .notAFolder(let path):
            return "\(path) is not a folder; pass the model folder that holds config.json and model.safetensors"
        case .hubModelNotCached(let name, let repo, let cache, let holds):
            let held: String
            switch holds {
            case nil: held = "that folder does not exist"
            case let list? where list.isEmpty: held = "it holds no models"
            case let list?: held = "it holds: " + list.joined(separator: ", ")
            }
            let named = name == repo ? "'\(name)'" : "'\(name)' (\(repo))"
            return "model \(named) is neither a folder nor in the Hugging Face hub cache \(cache) (\(held)); lnlens never downloads: run `huggingface-cli download \(repo)` or pass a folder path (cache location: HF_HUB_CACHE, HF_HOME)"
        case .hubSnapshotMissing(let name, let path):
            return "hub cache entry for '\(name)' points to snapshot \(path), which is missing or incomplete; download the model again with `huggingface-cli download \(name)`"
        case .configMissing(let directory):
            return "no config.json in \(directory); a model folder needs config.json and model.safetensors"
        case .configInvalidJSON(let file, let reason):
            return "\(file) is not a valid GPT-2 config: \(reason)"
        case .configMissingKey(let file, let key):
            return "\(file) is missing the required key \"\(key)\""
        case .configBadValue(let file, let key, let reason):
            return "\(file): \"\(key)\" \(reason)"
        case .noWeights(let directory, let hint):
            return "no model.safetensors or model.safetensors.index.json in \(directory)\(hint)"
        case .indexInvalid(let file, let reason):
            return "\(file) is not a valid safetensors index: \(reason)"
        case .shardMissing(let index, let shard):
            return "shard \(shard) listed in \(index) does not exist; download the missing file or fix the index"
        case .shardLacksTensor(let index, let shard, let tensor):
            return "\(index) puts tensor \(tensor) in \(shard), but that shard does not hold it"
        case .duplicateTensor(let tensor, let file, let otherFile):
            return "tensor \(tensor) is stored twice (\(file) and \(otherFile)); keep one copy"
        case .fileUnreadable(let file, let reason):
            return "cannot read \(file): \(reason)"
        case .fileTooShort(let file, let size):
            return "\(file) is not a safetensors file: \(size) bytes, shorter than the 8-byte header length (truncated download?)"
        case .headerLengthBeyondFile(let file, let headerLength, let fileSize):
            return "\(file) is not a safetensors file or is truncated: header length \(headerLength) goes beyond the file's \(fileSize) bytes"
        case .headerInvalid(let file, let reason):
            return "\(file) has a bad safetensors header: \(reason)"
        case .entryInvalid(let file, let tensor, let reason):
            return "\(file): tensor \(tensor): \(reason)"
        case .unknownDType(let file, let tensor, let dtype):
            return "\(file): tensor \(tensor) has unknown dtype \"\(dtype)\"; lnlens reads \(SafetensorsDType.readableList)"
        case .unsupportedDType(let file, let tensor, let dtype):
            return "\(file): tensor \(tensor) has dtype \(dtype); lnlens reads \(SafetensorsDType.readableList) (convert the checkpoint)"
        case .sizeMismatch(let file, let tensor, let shape, let dtype, let expectedBytes, let foundBytes):
            return "\(file): tensor \(tensor) of shape \(shape) and dtype \(dtype) needs \(expectedBytes) bytes but its data_offsets span \(foundBytes)"
        case .offsetsOutOfRange(let file, let tensor, let begin, let end, let dataLength):
            return "\(file): tensor \(tensor) has data_offsets [\(begin), \(end)] beyond the \(dataLength)-byte data section (truncated file?)"
        case .overlappingOffsets(let file, let tensor, let other):
            return "\(file): tensors \(other) and \(tensor) have overlapping data_offsets; the file is corrupt"
        case .dataNotCovered(let file, let reason):
            return "\(file) is not a valid safetensors file: \(reason); the file is corrupt or was written incorrectly, download or export it again"
        case .nonFiniteWeights(let file, let tensor, let count, let total):
            return "\(file): tensor \(tensor) holds \(count) non-finite value\(count == 1 ? "" : "s") (NaN or ±Inf) of \(total); the checkpoint is damaged or diverged in training, lnlens will not run it"
        case .noSuchTensor(let file, let tensor):
            return "\(file) holds no tensor named \(tensor)"
        case .writeFailed(let file, let reason):
            return "cannot write \(file): \(reason)"
        case .missingTensor(let directory, let tensor, let expected, let more):
            return "checkpoint \(directory) is missing tensor \(tensor) (expected shape \(expected))\(Self.moreSuffix(more))"
        case .unexpectedTensor(let file, let tensor, let more):
            return "\(file) holds unexpected tensor \(tensor); lnlens imports GPT-2 (GPT2LMHeadModel) weights only\(Self.moreSuffix(more))"
        case .misshapenTensor(let file, let tensor, let expected, let found, let more):
            return "\(file): tensor \(tensor) has shape \(found), expected \(expected) from config.json\(Self.moreSuffix(more))"
        case .untiedWithoutUnembedding(let directory):
            return "config.json in \(directory) sets tie_word_embeddings false but the checkpoint has no lm_head.weight"
        case .emptyPrompt:
            return "the prompt is empty: give at least one token of text (or pass --prepend-bos)"
        case let .promptTooLong(tokens, nCtx):
            return "the prompt is \(tokens) tokens but the model's context (n_positions) is \(nCtx): shorten the prompt"
        case let .tokenOutOfRange(id, dVocab):
            return "token id \(id) is outside the model's vocabulary (vocab_size \(dVocab)): use the model's own tokenizer"
        case let .unequalLengths(first, other, index):
            return "prompts in one batch must have equal token counts: prompt 0 has \(first), prompt \(index) has \(other)"
        case let .unknownPattern(p):
            return "no hook matches '\(p)': use a TransformerLens name (blocks.0.attn.hook_pattern), a glob (blocks.*.hook_resid_pre) or 'all'; 'lnlens inspect' lists the hooks"
        case let .layerOutOfRange(p, nLayers):
            return "hook '\(p)' names a layer the model does not have (layers 0..\(nLayers - 1))"
        case let .hookBeforeStart(hook, start):
            return "\(hook) comes before \(start), where this pass starts: intervene or cache there with a whole forward pass"
        case let .interventionShape(hook, expected, got):
            return "intervention on \(hook): the value has shape \(got) but the hook has shape \(expected)"
        case let .positionOutOfRange(hook, position, length):
            return "intervention on \(hook): position \(position) is outside the prompt (length \(length))"
        case let .headOutOfRange(hook, head, nHeads):
            return "intervention on \(hook): head \(head) does not exist (heads 0..\(nHeads - 1))"
        case let .headsOnNonHeadHook(hook):
            return "intervention on \(hook): this hook has no head axis, so heads cannot be chosen"
        case let .customNotDifferentiable(hook):
            return "intervention on \(hook): a custom intervention has no derivative, so no gradient can pass it; use replace, add, scale or zero"
        case .backwardNeedsRetainedPass:
            return "a backward pass needs the forward pass run with retainForBackward: true"
        case let .metricNeedsLogits(metric, positions):
            return "the metric \(metric) needs logits at \(positions) positions; run the forward with those logits"
        case let .tokenOutOfVocabulary(what, id, dVocab):
            return "\(what) token id \(id) is outside the model's vocabulary (vocab_size \(dVocab))"
        case .exportNeedsCheckpointParameters:
            return "only an unprocessed model (weights as in the checkpoint: --no-process) can be saved or give parameter gradients under checkpoint names"
        case .unknownCanonicalTensor(let name):
            return "no GPT-2 tensor named \(name); names look like wte.weight, h.0.attn.c_attn.weight, ln_f.bias, lm_head.weight"
        }
    }

    private static func moreSuffix(_ more: Int) -> String {
        more == 0 ? "" : " (and \(more) more problem\(more == 1 ? "" : "s"))"
    }
}
