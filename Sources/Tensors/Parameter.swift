/// A trainable tensor: its value, its gradient (same shape, accumulated by backward passes),
/// and its checkpoint name (the Hugging Face key, e.g. `model.layers.0.self_attn.q_proj.weight`).
public final class Parameter {
    public let name: String
    public let value: Tensor
    public let grad: Tensor
    /// Frozen parameters keep their value; optimizers skip them.
    public var frozen = false

    public init(name: String, value: Tensor) {
        self.name = name
        self.value = value
        self.grad = Tensor(shape: value.shape)
    }

    public func zeroGrad() { grad.fill(0) }
}
