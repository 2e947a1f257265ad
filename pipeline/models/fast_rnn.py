"""Recurrent layers with the input projection hoisted out of the time loop (plain Keras 3).

``FastLSTM``, ``FastGRU`` and ``FastSimpleRNN`` are drop-in subclasses of ``keras.layers.LSTM``,
``GRU`` and ``SimpleRNN``: same constructor, same cell, same weight variables and layout
(``cell.kernel`` (in, k*units), ``cell.recurrent_kernel`` (units, k*units), ``cell.bias``; the
GRU's reset_after bias is the (2, 3*units) input/recurrent pair), so weights and checkpoints
move freely between them and the stock layers. Only ``inner_loop`` differs:

  * the whole input sequence is projected at once, one (T*B, in) x (in, k*units) matmul with
    the input bias folded in (and, for the GRU, the update/reset part of the recurrent bias),
    laid out time-major so that the loop reads contiguous (B, k*units) slices;
  * the time loop (the backend's own ``rnn`` loop, the one the stock layers use: an XLA-friendly
    ``tf.while_loop`` on TensorFlow, ``lax.scan`` on JAX) then does only h @ recurrent_kernel and
    the gate math per step;
  * the backward pass is written by hand (``keras.ops.custom_gradient``), as cuDNN does it: a
    reverse loop computes only the pre-activation gradients dZ_t and dh_{t-1} = dZ_t U^T, and
    the recurrent kernel's gradient is then one (U, T*B) x (T*B, k*units) matmul instead of a
    (U, k*units) accumulation at every step. It applies to tanh/sigmoid layers (the GRU with
    reset_after=True) with a static sequence length; otherwise the backend differentiates the
    forward loop (still hoisted).

The stock implementation instead runs the cell at every step (x_t @ W + h @ U + b). Where Keras
would use cuDNN (TensorFlow/JAX/torch with a GPU and cuDNN-eligible settings, or
``use_cudnn=True``), and for the cases the fast loop leaves out (a mask, recurrent dropout,
implementation=1 with dropout), the layers defer to the stock ``inner_loop``, so GPU training
keeps cuDNN. Input dropout (``dropout``) is applied as the stock layers do: one mask per sequence,
shared by all steps.
"""
from __future__ import annotations

import keras
from keras import ops

PACKAGE = "seqlab"


def _cudnn_ok(layer, **extra) -> bool:
    """The backend's own test of whether the stock layer would run cuDNN here (GPU present)."""
    try:
        from keras.src import backend as kbackend  # no public equivalent
        cudnn_ok = kbackend.cudnn_ok
    except (ImportError, AttributeError):
        return False
    cell = layer.cell
    args = (cell.activation, cell.recurrent_activation, layer.unroll, cell.use_bias)
    try:
        return bool(cudnn_ok(*args, **extra))
    except TypeError:   # backends whose cudnn_ok has no reset_after argument
        return bool(cudnn_ok(*args))


def _backend_rnn():
    """The backend's own time loop, the one the stock layers run (TF: an XLA-compatible
    while_loop with maximum_iterations and TensorArrays; JAX: lax.scan)."""
    from keras.src import backend as kbackend  # no public equivalent
    return kbackend.rnn


def _read(variable):
    """The variable's current (autocast) value as a tensor: no variable is read inside the loops
    (nor inside a custom gradient, which TensorFlow would otherwise want to differentiate)."""
    return ops.copy(variable)


def _is(fn, name):
    return fn in (getattr(keras.activations, name), getattr(ops, name))


def _upstream(args, upstream, like):
    """The output cotangents handed to a custom gradient, on every backend, one per tensor of
    ``like`` (the outputs), a missing (None) one as zeros."""
    if upstream is not None:
        grads = upstream
    elif len(args) == 1 and isinstance(args[0], (tuple, list)):
        grads = args[0]
    else:
        grads = args
    grads = list(grads)[:len(like)]
    return [ops.zeros_like(y) if g is None else g for g, y in zip(grads, like)]


def _lstm_cell(z, c, act, rec_act):
    """One LSTM step from its pre-activations z = x W + h U + b (B, 4U), gates in Keras' order
    (input, forget, cell, output): the new h and c and the four gate activations."""
    i, f, g, o = ops.split(z, 4, axis=-1)
    i, f, g, o = rec_act(i), rec_act(f), act(g), rec_act(o)
    c = f * c + i * g
    return o * act(c), c, (i, f, g, o)


def _gru_cell(x_t, m, h, bias_h, act, rec_act):
    """One reset_after GRU step.

    x_t (B, 3U) is the projected input, with the input bias and the update/reset part of the
    recurrent bias folded in; m = h U (B, 3U); bias_h is the candidate's recurrent bias (None: no
    bias). Returns the new h, the update/reset activations zr (B, 2U), the candidate hh, and m_h,
    the candidate's recurrent term (bias included) that the reset gate scales."""
    n = m.shape[-1] // 3
    zr = rec_act(x_t[:, :2 * n] + m[:, :2 * n])
    z, r = zr[:, :n], zr[:, n:]
    m_h = m[:, 2 * n:] if bias_h is None else m[:, 2 * n:] + bias_h
    hh = act(x_t[:, 2 * n:] + r * m_h)
    return hh + z * (h - hh), zr, hh, m_h


def _lstm_sequence(xz, h0, c0, u):
    """hs (T, B, U), [h_T, c_T] of the LSTM recurrence over the projected inputs xz (T, B, 4U).

    Backward by hand, as cuDNN does: the loop runs back through time computing only the gate
    gradients dZ_t and dh_{t-1} = dZ_t U^T; the recurrent kernel's gradient is then one matmul
    H_prev^T dZ over all steps instead of a (U, 4U) accumulation per step.
    """
    steps = xz.shape[0]
    rnn = _backend_rnn()

    @ops.custom_gradient
    def seq(xz, h0, c0, u):
        def fstep(x_t, states):
            h, c = states
            h, c, gates = _lstm_cell(x_t + ops.matmul(h, u), c, ops.tanh, ops.sigmoid)
            return (h, c, ops.concatenate(gates, axis=-1)), [h, c]

        _, (hs, cs, acts), (h_t, c_t) = rnn(fstep, xz, [h0, c0], input_length=steps, time_major=True)

        def grad(*args, upstream=None):
            d_hs, d_ht, d_ct = _upstream(args, upstream, (hs, h_t, c_t))
            c_prev = _shift_in(c0, cs)
            u_t = ops.transpose(u)

            def bstep(inp, states):
                d_h_out, a, c, cp = inp
                dh, dc = states
                n = c.shape[-1]
                i, f, g, o = a[:, :n], a[:, n:2 * n], a[:, 2 * n:3 * n], a[:, 3 * n:]
                dh = dh + d_h_out
                tc = ops.tanh(c)
                dc = dc + dh * o * (1.0 - tc * tc)
                dz = ops.concatenate([dc * g * i * (1.0 - i), dc * cp * f * (1.0 - f),
                                      dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], axis=-1)
                return dz, [ops.matmul(dz, u_t), dc * f]

            _, dzs, (dh0, dc0) = rnn(bstep, (d_hs, acts, cs, c_prev), [d_ht, d_ct], go_backwards=True,
                                     input_length=steps, time_major=True)
            dzs = ops.flip(dzs, axis=0)
            return dzs, dh0, dc0, _kernel_grad(_shift_in(h0, hs), dzs)

        return (hs, h_t, c_t), grad

    hs, h_t, c_t = seq(xz, h0, c0, u)
    return hs, [h_t, c_t]


def _shift_in(first, seq):
    """[first, seq[0], ..., seq[T-2]]: the state each step starts from."""
    return ops.concatenate([ops.expand_dims(first, 0), seq[:-1]], axis=0)


def _kernel_grad(h_prev, d_pre):
    """sum_t h_prev[t]^T d_pre[t]: (T, B, U), (T, B, kU) -> (U, kU), as one matmul."""
    flat_h = ops.reshape(h_prev, (-1, h_prev.shape[-1]))
    return ops.matmul(ops.transpose(flat_h), ops.reshape(d_pre, (-1, d_pre.shape[-1])))


def _gru_sequence(xz, h0, u, bias_h):
    """hs (T, B, U), [h_T] of the reset_after GRU over xz (T, B, 3U) (input bias and the z/r part
    of the recurrent bias included), with the recurrent kernel's gradient as one matmul."""
    steps = xz.shape[0]
    rnn = _backend_rnn()

    @ops.custom_gradient
    def seq(xz, h0, u, bias_h):
        def fstep(x_t, states):
            (h,) = states
            h, zr, hh, m_h = _gru_cell(x_t, ops.matmul(h, u), h, bias_h, ops.tanh, ops.sigmoid)
            return (h, ops.concatenate([zr, hh], axis=-1), m_h), [h]

        _, (hs, acts, m_hs), (h_t,) = rnn(fstep, xz, [h0], input_length=steps, time_major=True)

        def grad(*args, upstream=None):
            d_hs, d_ht = _upstream(args, upstream, (hs, h_t))
            h_prev = _shift_in(h0, hs)
            u_t = ops.transpose(u)

            def bstep(inp, states):
                d_h_out, a, m_h, hp = inp
                (dh,) = states
                n = m_h.shape[-1]
                z, r, hh = a[:, :n], a[:, n:2 * n], a[:, 2 * n:]
                dh = dh + d_h_out
                dz = dh * (hp - hh) * z * (1.0 - z)
                da = dh * (1.0 - z) * (1.0 - hh * hh)
                dr = da * m_h * r * (1.0 - r)
                dm_h = da * r
                dm = ops.concatenate([dz, dr, dm_h], axis=-1)
                return (ops.concatenate([dz, dr, da], axis=-1), dm_h), [dh * z + ops.matmul(dm, u_t)]

            _, (dxs, dm_hs), (dh0,) = rnn(bstep, (d_hs, acts, m_hs, h_prev), [d_ht], go_backwards=True,
                                          input_length=steps, time_major=True)
            dxs, dm_hs = ops.flip(dxs, axis=0), ops.flip(dm_hs, axis=0)
            n = dm_hs.shape[-1]
            dms = ops.concatenate([dxs[..., :2 * n], dm_hs], axis=-1)
            return dxs, dh0, _kernel_grad(h_prev, dms), ops.sum(dm_hs, axis=(0, 1))

        return (hs, h_t), grad

    hs, h_t = seq(xz, h0, u, bias_h)
    return hs, [h_t]


def _tanh_rnn_sequence(xz, h0, u):
    """hs (T, B, U), [h_T] of h_t = tanh(xz_t + h_{t-1} U), the kernel's gradient as one matmul."""
    steps = xz.shape[0]
    rnn = _backend_rnn()

    @ops.custom_gradient
    def seq(xz, h0, u):
        def fstep(x_t, states):
            h = ops.tanh(x_t + ops.matmul(states[0], u))
            return h, [h]

        _, hs, (h_t,) = rnn(fstep, xz, [h0], input_length=steps, time_major=True)

        def grad(*args, upstream=None):
            d_hs, d_ht = _upstream(args, upstream, (hs, h_t))
            u_t = ops.transpose(u)

            def bstep(inp, states):
                d_h_out, h = inp
                da = (states[0] + d_h_out) * (1.0 - h * h)
                return da, [ops.matmul(da, u_t)]

            _, das, (dh0,) = rnn(bstep, (d_hs, hs), [d_ht], go_backwards=True, input_length=steps,
                                 time_major=True)
            das = ops.flip(das, axis=0)
            return das, dh0, _kernel_grad(_shift_in(h0, hs), das)

        return (hs, h_t), grad

    hs, h_t = seq(xz, h0, u)
    return hs, [h_t]


class _HoistedRNN:
    """Mixin: the hoisted-projection ``inner_loop`` shared by the three layer types.

    Subclasses define ``_cudnn_would_run``, ``_input_bias``, ``_make_step`` (one step of the
    recurrence on a projected input, differentiated by the backend) and ``_custom_ok`` /
    ``_custom_sequence`` (the whole recurrence with the hand-written backward pass).
    """

    #: the hand-written backward pass where it applies (static T, tanh/sigmoid, GRU reset_after,
    #: not go_backwards/unroll); False: the backend differentiates the forward loop
    custom_backward = True

    def _custom_ok(self) -> bool:
        return False

    # ---- when to use the stock implementation -------------------------------------------
    def _cudnn_would_run(self) -> bool:
        raise NotImplementedError

    def _use_stock(self, mask, training) -> bool:
        if mask is not None or self.recurrent_dropout:
            return True
        if training and self.dropout and getattr(self.cell, "implementation", 2) == 1:
            return True     # one dropout mask per gate: leave it to the cell
        if getattr(self, "use_cudnn", False) is True:
            return True     # cuDNN explicitly requested: stock path (it raises if impossible)
        return getattr(self, "use_cudnn", False) == "auto" and self._cudnn_would_run()

    # ---- the fast path -----------------------------------------------------------------
    def _project(self, sequences, training, time_major=True):
        """(B, T, in) -> (T, B, k*units) (or (B, T, k*units)) input projection, bias included."""
        cell = self.cell
        x = sequences
        if training and 0.0 < self.dropout < 1.0:
            dp_mask = cell.get_dropout_mask(sequences[:, 0, :])   # (B, in), same for all steps
            x = x * ops.expand_dims(dp_mask, 1)
        if time_major:
            x = ops.transpose(x, (1, 0, 2))     # before projecting: in <= k*units
        z = ops.matmul(x, cell.kernel)
        bias = self._input_bias()
        if bias is not None:
            z = z + bias
        return z

    def step_once(self, inputs, states):
        """One time step at inference, without the sequence machinery (the compiled decoder's
        hot path): ``inputs`` (B, 1, in), ``states`` the layer's (h[, c]) -> the new (h[, c])."""
        xz = self._project(inputs, False, time_major=False)[:, 0]
        return tuple(self._make_step(_read(self.cell.recurrent_kernel))(tuple(states), xz))

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0] if mask else None
        if self._use_stock(mask, training):
            return super().inner_loop(sequences, initial_state, mask=mask, training=training)
        if not isinstance(initial_state, (list, tuple)):
            initial_state = [initial_state]
        steps = sequences.shape[1]
        xz = self._project(sequences, training, time_major=steps is not None)
        u = _read(self.cell.recurrent_kernel)    # read once, outside the loop

        if (self.custom_backward and steps is not None and not self.go_backwards and not self.unroll
                and self._custom_ok()):
            hs, states = self._custom_sequence(xz, list(initial_state), u)
            outputs = (ops.transpose(hs, (1, 0, 2)) if self.return_sequences
                       else ops.expand_dims(states[0], 1))
            return states[0], outputs, list(states)

        step = self._make_step(u)

        def rnn_step(x_t, states):
            states = step(tuple(states), x_t)
            return states[0], list(states)

        if steps is None:     # batch-major: rnn() finds T itself
            return _backend_rnn()(rnn_step, xz, list(initial_state), go_backwards=self.go_backwards,
                                  unroll=self.unroll, return_all_outputs=self.return_sequences)
        last, outputs, states = _backend_rnn()(
            rnn_step, xz, list(initial_state), go_backwards=self.go_backwards, unroll=self.unroll,
            input_length=steps, time_major=True, return_all_outputs=self.return_sequences)
        return last, ops.transpose(outputs, (1, 0, 2)), list(states)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FastLSTM(_HoistedRNN, keras.layers.LSTM):
    """keras.layers.LSTM with the input projection hoisted out of the time loop (see module)."""
    def _cudnn_would_run(self):
        return _cudnn_ok(self)

    def _input_bias(self):
        return self.cell.bias if self.cell.use_bias else None

    def _make_step(self, recurrent_kernel):
        act, rec_act = self.cell.activation, self.cell.recurrent_activation

        def step(carry, x_t):
            h, c = carry
            h, c, _ = _lstm_cell(x_t + ops.matmul(h, recurrent_kernel), c, act, rec_act)
            return h, c

        return step

    def _custom_ok(self):
        cell = self.cell
        return _is(cell.activation, "tanh") and _is(cell.recurrent_activation, "sigmoid")

    def _custom_sequence(self, xz, initial_state, recurrent_kernel):
        return _lstm_sequence(xz, initial_state[0], initial_state[1], recurrent_kernel)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FastGRU(_HoistedRNN, keras.layers.GRU):
    """keras.layers.GRU (either reset_after) with the input projection hoisted (see module)."""
    def _cudnn_would_run(self):
        return _cudnn_ok(self, reset_after=self.cell.reset_after)

    def _biases(self):
        cell = self.cell
        if not cell.use_bias:
            return None, None
        if cell.reset_after:
            return cell.bias[0], cell.bias[1]
        return cell.bias, None

    def _input_bias(self):
        input_bias, recurrent_bias = self._biases()
        if recurrent_bias is None:
            return input_bias
        # the update and reset gates see x W + b_x + h U + b_h: fold their b_h in here
        units = self.cell.units
        return input_bias + ops.concatenate(
            [recurrent_bias[:2 * units], ops.zeros_like(recurrent_bias[2 * units:])], axis=0)

    def _custom_ok(self):
        cell = self.cell
        return (cell.reset_after and _is(cell.activation, "tanh")
                and _is(cell.recurrent_activation, "sigmoid"))

    def _candidate_bias(self):
        """reset_after: the recurrent bias of the candidate, which the reset gate scales; None
        without biases."""
        _, recurrent_bias = self._biases()
        return None if recurrent_bias is None else recurrent_bias[2 * self.cell.units:]

    def _custom_sequence(self, xz, initial_state, recurrent_kernel):
        bias_h = self._candidate_bias()
        if bias_h is None:
            bias_h = ops.zeros((self.cell.units,), dtype=xz.dtype)
        return _gru_sequence(xz, initial_state[0], recurrent_kernel, bias_h)

    def _make_step(self, recurrent_kernel):
        cell = self.cell
        act, rec_act, units = cell.activation, cell.recurrent_activation, cell.units

        if cell.reset_after:
            bias_h = self._candidate_bias()

            def step(carry, x_t):
                (h,) = carry
                return (_gru_cell(x_t, ops.matmul(h, recurrent_kernel), h, bias_h, act, rec_act)[0],)
        else:
            u_zr, u_h = recurrent_kernel[:, :2 * units], recurrent_kernel[:, 2 * units:]

            def step(carry, x_t):
                (h,) = carry
                zr = rec_act(x_t[:, :2 * units] + ops.matmul(h, u_zr))
                z, r = zr[:, :units], zr[:, units:]
                hh = act(x_t[:, 2 * units:] + ops.matmul(r * h, u_h))
                h = z * h + (1.0 - z) * hh
                return (h,)

        return step


@keras.saving.register_keras_serializable(package=PACKAGE)
class FastSimpleRNN(_HoistedRNN, keras.layers.SimpleRNN):
    """keras.layers.SimpleRNN with the input projection hoisted (see module). No cuDNN path."""
    def _use_stock(self, mask, training):
        return mask is not None or bool(self.recurrent_dropout)

    def _input_bias(self):
        return self.cell.bias

    def _custom_ok(self):
        return _is(self.cell.activation, "tanh")

    def _custom_sequence(self, xz, initial_state, recurrent_kernel):
        return _tanh_rnn_sequence(xz, initial_state[0], recurrent_kernel)

    def _make_step(self, recurrent_kernel):
        act = self.cell.activation or (lambda v: v)

        def step(carry, x_t):
            (h,) = carry
            h = act(x_t + ops.matmul(h, recurrent_kernel))
            return (h,)

        return step
