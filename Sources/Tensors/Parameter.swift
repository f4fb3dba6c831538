/// A trainable tensor: its value, its gradient (same shape, accumulated by backward passes),
/// and its checkpoint name (the Hugging Face key, e.g. `model.layers.0.self_attn.q_proj.weight`).
package final class Parameter {
    package let name: String
    package let value: Tensor
    package let grad: Tensor
    /// Frozen parameters keep their value; optimizers skip them.
    package var frozen = false

    package init(name: String, value: Tensor) {
        self.name = name
        self.value = value
        self.grad = Tensor(shape: value.shape)
    }

    package func zeroGrad() { grad.fill(0) }
}
