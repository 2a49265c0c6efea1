import TensorCore

/// A change made to one hook's activation during the forward pass, at chosen positions and heads.
///
/// `replace` and `add` take a tensor of the hook's full shape (`[b, …]`) or with batch size 1,
/// which is then used for every prompt of the batch. Only the selected positions (query
/// positions for `attn_scores`/`pattern`) and heads are touched; `nil` selects all.
public struct Intervention: Sendable {
    public enum Operation: Sendable {
        case replace(Tensor)
        case add(Tensor)
        case zero
        case scale(Float)
        /// Receives the hook's whole activation and may change any of it (positions/heads ignored).
        case custom(@Sendable (inout Tensor) -> Void)
    }

    public var hook: HookName
    public var positions: [Int]?
    public var heads: [Int]?
    public var operation: Operation

    public init(_ hook: HookName, positions: [Int]? = nil, heads: [Int]? = nil, _ operation: Operation) {
        self.hook = hook
        self.positions = positions
        self.heads = heads
        self.operation = operation
    }
}

/// Where a hook's values live inside an activation buffer: shape, element strides, offset,
/// and which axes are the position and head axes.
struct HookLayout {
    var shape: [Int]
    var strides: [Int]
    var offset: Int = 0
    var posAxis: Int?
    var headAxis: Int?

    var count: Int { shape.reduce(1, *) }

    /// Calls `body(bufferStart, tensorStart, outerIndex)` for every innermost row (the last
    /// axis is always contiguous), with the outer multi-index.
    func forEachRow(_ body: (Int, Int, [Int]) -> Void) {
        let outer = shape.count - 1
        var index = [Int](repeating: 0, count: outer)
        let rows = shape[..<outer].reduce(1, *)
        let rowLen = shape[outer]
        for r in 0..<rows {
            var start = offset
            for a in 0..<outer { start += index[a] * strides[a] }
            body(start, r * rowLen, index)
            var a = outer - 1
            while a >= 0 {
                index[a] += 1
                if index[a] < shape[a] { break }
                index[a] = 0
                a -= 1
            }
        }
    }

    /// The values as a tensor of `shape`; with `positions`, only those positions of the position
    /// axis, in the order given (the axis then has `positions.count` entries).
    func extract(from buffer: UnsafePointer<Float>, positions: [Int]? = nil) -> Tensor {
        let rowLen = shape[shape.count - 1]
        guard let positions, let axis = posAxis, axis < shape.count - 1 else {
            // Every row is written once: no zeros first.
            let out = [Float](unsafeUninitializedCapacity: count) { o, initialized in
                forEachRow { src, dst, _ in (o.baseAddress! + dst).initialize(from: buffer + src, count: rowLen) }
                initialized = count
            }
            return Tensor(shape: shape, data: out)
        }
        var outShape = shape
        outShape[axis] = positions.count
        var slot = [Int](repeating: -1, count: shape[axis])
        for (i, p) in positions.enumerated() where p >= 0 && p < shape[axis] { slot[p] = i }
        var outStrides = [Int](repeating: 1, count: outShape.count)
        for a in stride(from: outShape.count - 2, through: 0, by: -1) { outStrides[a] = outStrides[a + 1] * outShape[a + 1] }
        var out = [Float](repeating: 0, count: outShape.reduce(1, *))
        out.withUnsafeMutableBufferPointer { o in
            forEachRow { src, _, index in
                let s = slot[index[axis]]
                guard s >= 0 else { return }
                var dst = 0
                for a in 0..<index.count { dst += (a == axis ? s : index[a]) * outStrides[a] }
                (o.baseAddress! + dst).update(from: buffer + src, count: rowLen)
            }
        }
        return Tensor(shape: outShape, data: out)
    }

    func write(_ t: Tensor, into buffer: UnsafeMutablePointer<Float>) {
        let rowLen = shape[shape.count - 1]
        t.data.withUnsafeBufferPointer { s in
            forEachRow { dst, src, _ in
                (buffer + dst).update(from: s.baseAddress! + src, count: rowLen)
            }
        }
    }
}

extension Intervention {
    /// Multiplies the gradient at `buffer` by this intervention's derivative, for the selected
    /// positions and heads: replaced and zeroed entries pass no gradient, scaled ones pass it scaled,
    /// added ones pass it unchanged. A custom intervention has no derivative lnlens knows.
    func applyDerivative(to buffer: UnsafeMutablePointer<Float>, layout: HookLayout) throws(GPT2Error) {
        let factor: Float
        switch operation {
        case .add: return
        case .replace, .zero: factor = 0
        case .scale(let f): factor = f
        case .custom: throw .customNotDifferentiable(hook: hook.description)
        }
        let (posOK, headOK) = try selections(layout)
        let rowLen = layout.shape[layout.shape.count - 1]
        layout.forEachRow { dst, _, index in
            if let posOK, let a = layout.posAxis, a < index.count, !posOK[index[a]] { return }
            if let headOK, let a = layout.headAxis, a < index.count, !headOK[index[a]] { return }
            let row = buffer + dst
            if factor == 0 { row.update(repeating: 0, count: rowLen) } else { for i in 0..<rowLen { row[i] *= factor } }
        }
    }

    /// Which positions and heads are selected (nil: all), checked against the layout.
    func selections(_ layout: HookLayout) throws(GPT2Error) -> (positions: [Bool]?, heads: [Bool]?) {
        let name = hook.description
        func selection(_ indices: [Int]?, axis: Int?, outOfRange: (Int, Int) -> GPT2Error) throws(GPT2Error) -> [Bool]? {
            guard let indices, let axis else { return nil }
            let n = layout.shape[axis]
            var ok = [Bool](repeating: false, count: n)
            for i in indices {
                guard i >= 0 && i < n else { throw outOfRange(i, n) }
                ok[i] = true
            }
            return ok
        }
        let posOK = try selection(positions, axis: layout.posAxis) {
            .positionOutOfRange(hook: name, position: $0, length: $1)
        }
        if heads != nil && layout.headAxis == nil { throw .headsOnNonHeadHook(hook: name) }
        let headOK = try selection(heads, axis: layout.headAxis) { .headOutOfRange(hook: name, head: $0, nHeads: $1) }
        return (posOK, headOK)
    }

    /// Applies this intervention to the buffer that `layout` describes.
    func apply(to buffer: UnsafeMutablePointer<Float>, layout: HookLayout) throws(GPT2Error) {
        let name = hook.description
        if case .custom(let body) = operation {
            var t = layout.extract(from: buffer)
            body(&t)
            guard t.shape == layout.shape else {
                throw .interventionShape(hook: name, expected: layout.shape, got: t.shape)
            }
            layout.write(t, into: buffer)
            return
        }
        let (posOK, headOK) = try selections(layout)
        var source: Tensor? = nil
        var broadcastBatch = false
        switch operation {
        case .replace(let t), .add(let t):
            if t.shape == layout.shape {
                source = t
            } else if t.shape.count == layout.shape.count, t.shape[0] == 1,
                      Array(t.shape.dropFirst()) == Array(layout.shape.dropFirst()) {
                source = t
                broadcastBatch = true
            } else {
                throw .interventionShape(hook: name, expected: layout.shape, got: t.shape)
            }
        default: break
        }
        let rowLen = layout.shape[layout.shape.count - 1]
        let perBatch = layout.count / layout.shape[0]
        let operation = self.operation
        func run(_ src: UnsafePointer<Float>?) {
            layout.forEachRow { dst, tIndex, index in
                if let posOK, let a = layout.posAxis, a < index.count, !posOK[index[a]] { return }
                if let headOK, let a = layout.headAxis, a < index.count, !headOK[index[a]] { return }
                let row = buffer + dst
                let sIndex = broadcastBatch ? tIndex % perBatch : tIndex
                switch operation {
                case .zero: row.update(repeating: 0, count: rowLen)
                case .scale(let f): for i in 0..<rowLen { row[i] *= f }
                case .replace: row.update(from: src! + sIndex, count: rowLen)
                case .add: for i in 0..<rowLen { row[i] += src![sIndex + i] }
                case .custom: break
                }
            }
        }
        if let source {
            source.data.withUnsafeBufferPointer { run($0.baseAddress!) }
        } else {
            run(nil)
        }
    }
}
