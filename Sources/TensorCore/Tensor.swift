/// A dense row-major Float32 tensor: the value type every module passes around.
///
/// Storage is a plain `[Float]` so copies are copy-on-write and kernels take
/// `withUnsafe(Mutable)BufferPointer` views; the last dimension is contiguous.
public struct Tensor: Sendable, Equatable {
    public var shape: [Int]
    public var data: [Float]

    public init(shape: [Int], data: [Float]) {
        precondition(shape.reduce(1, *) == data.count, "shape \(shape) does not hold \(data.count) values")
        self.shape = shape
        self.data = data
    }

    public init(zeros shape: [Int]) {
        self.shape = shape
        self.data = [Float](repeating: 0, count: shape.reduce(1, *))
    }

    public var count: Int { data.count }
    public var rank: Int { shape.count }

    /// The same values under another shape with the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, data: data)
    }

    /// Largest absolute elementwise difference; shapes must have equal counts.
    public func maxAbsDifference(_ other: Tensor) -> Float {
        precondition(count == other.count, "count \(count) vs \(other.count)")
        var worst: Float = 0
        for i in 0..<count {
            let a = data[i], b = other.data[i]
            if a == b { continue }  // also equal infinities
            let d = abs(a - b)
            if d.isNaN || d > worst { worst = d.isNaN ? .infinity : d }
        }
        return worst
    }

    public var maxAbs: Float {
        data.reduce(0) { max($0, abs($1)) }
    }
}
