import Tensors

/// Several training input transforms at one site, applied in order: x → T_k(…T_1(x)). A site
/// of the training decoder holds one transform; a rotated or FlatQuant-transformed model needs
/// its online transform first and the activation quantizer after it, at the same input.
/// Backward runs the stages in reverse, each from the input its forward saw (kept from the
/// last forward, so forward and backward must alternate per site, as the decoder runs them).
package final class ChainedTransform: TrainableInputTransform {
    package let stages: [any TrainableInputTransform]
    /// The input of each stage after the first, from the last forward: (rows, width) each.
    private var intermediates: [Tensor] = []
    private var scratch: Tensor?

    package init(_ stages: [any TrainableInputTransform]) {
        precondition(!stages.isEmpty, "ChainedTransform: no stages")
        self.stages = stages
    }

    /// A chain of the two, or whichever is given alone (nil when neither is).
    package static func combining(_ first: (any TrainableInputTransform)?, _ second: (any TrainableInputTransform)?) -> (any TrainableInputTransform)? {
        switch (first, second) {
        case let (a?, b?): ChainedTransform(stages(of: a) + stages(of: b))
        case let (a?, nil): a
        case let (nil, b?): b
        case (nil, nil): nil
        }
    }

    /// The transform's stages: a chain's, or the transform itself.
    package static func stages(of t: any TrainableInputTransform) -> [any TrainableInputTransform] {
        (t as? ChainedTransform)?.stages ?? [t]
    }

    package var parameters: [Parameter] { stages.flatMap(\.parameters) }

    package func forward(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        let n = rows * width
        if intermediates.count != stages.count - 1 || intermediates.first.map({ $0.count != n }) == true {
            intermediates = (1..<stages.count).map { _ in Tensor(shape: [rows, width]) }
        }
        var input = x
        for (i, stage) in stages.enumerated() {
            let out = i + 1 < stages.count ? intermediates[i].ptr : y
            stage.forward(input, into: out, rows: rows, width: width)
            input = UnsafePointer(out)
        }
    }

    package func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        let n = rows * width
        precondition(intermediates.count == stages.count - 1 && intermediates.allSatisfy { $0.count == n },
                     "ChainedTransform: backward of \(rows) x \(width) without its forward")
        let buffer: Tensor
        if let s = scratch, s.count >= n { buffer = s } else { buffer = Tensor(shape: [n]); scratch = buffer }
        // The gradient moves back stage by stage between dx and the scratch buffer.
        dx.update(from: dy, count: n)
        for i in stride(from: stages.count - 1, through: 0, by: -1) {
            let input = i == 0 ? x : UnsafePointer(intermediates[i - 1].ptr)
            stages[i].backward(x: input, dy: dx, dx: buffer.ptr, rows: rows, width: width)
            dx.update(from: buffer.ptr, count: n)
        }
    }
}
