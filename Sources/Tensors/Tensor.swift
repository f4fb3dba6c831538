/// A contiguous, row-major fp32 array with a shape.
///
/// Deliberately small: no autograd, no views, no broadcasting. Layers own their buffers and
/// work on raw pointers (`ptr`) in their hot loops; this type only manages memory and shape.
/// Storage is 64-byte aligned so vector kernels and BLAS see cache-line-aligned rows.
package final class Tensor: @unchecked Sendable {
    package let shape: [Int]
    package let count: Int
    package let ptr: UnsafeMutablePointer<Float>

    /// A zero-filled tensor.
    package init(shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in shape \(shape)")
        self.shape = shape
        self.count = shape.reduce(1, *)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
        self.ptr = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        ptr.initialize(repeating: 0, count: max(count, 1))
    }

    package convenience init(shape: [Int], values: [Float]) {
        self.init(shape: shape)
        precondition(values.count == count, "\(values.count) values for shape \(shape)")
        values.withUnsafeBufferPointer { ptr.update(from: $0.baseAddress!, count: count) }
    }

    deinit { UnsafeMutableRawPointer(ptr).deallocate() }

    package var rank: Int { shape.count }
    package var buffer: UnsafeMutableBufferPointer<Float> { .init(start: ptr, count: count) }
    package var array: [Float] { Array(buffer) }

    /// Element access for tests and small set-up code; hot loops use `ptr`.
    package subscript(_ index: Int...) -> Float {
        get { ptr[offset(index)] }
        set { ptr[offset(index)] = newValue }
    }

    private func offset(_ index: [Int]) -> Int {
        precondition(index.count == shape.count, "index \(index) for shape \(shape)")
        var o = 0
        for (i, d) in zip(index, shape) {
            precondition(i >= 0 && i < d, "index \(index) out of range for shape \(shape)")
            o = o * d + i
        }
        return o
    }

    package func copy() -> Tensor {
        let t = Tensor(shape: shape)
        t.ptr.update(from: ptr, count: count)
        return t
    }

    /// The same values under another shape with the same element count.
    package func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        let t = Tensor(shape: newShape)
        t.ptr.update(from: ptr, count: count)
        return t
    }

    package func fill(_ value: Float) { ptr.update(repeating: value, count: count) }

    /// Pointer to row `i` when the tensor is viewed as (count / lastDim, lastDim).
    package func row(_ i: Int) -> UnsafeMutablePointer<Float> { ptr + i * (shape.last ?? 1) }

    /// The rows `indices` (of the (count / lastDim, lastDim) view) copied into a new
    /// (indices.count, lastDim) tensor, in that order.
    package func gatherRows(_ indices: [Int]) -> Tensor {
        let width = shape.last ?? 1
        let out = Tensor(shape: [indices.count, width])
        for (i, r) in indices.enumerated() { out.row(i).update(from: row(r), count: width) }
        return out
    }
}

extension Tensor: CustomStringConvertible {
    package var description: String {
        let head = buffer.prefix(6).map { String(format: "%.4g", $0) }.joined(separator: ", ")
        return "Tensor\(shape)[\(head)\(count > 6 ? ", ..." : "")]"
    }
}

import Foundation
