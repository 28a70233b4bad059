"""Work orders (工单): the hotline's closed loop.  Issue #2 builds the draft
made by the screen-pop and the agent's save; issue #5 the full loop."""
