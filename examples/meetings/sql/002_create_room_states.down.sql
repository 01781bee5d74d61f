DROP TABLE IF EXISTS room_states;
